"""DP-FedAvg: clipping bounds every update, the noise has the std it should, state is explicit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.keys import DPMode, Extra, HParam
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params, copy_params
from flmi.privacy.accounting import Ledger
from flmi.privacy.clip import clip_to_norm, global_norm, update_noise_multiplier
from flmi.privacy.noise_source import NoiseSource
from flmi.privacy.site_noise import SiteNoise
from flmi.privacy.strategies import ClientDP, ClientDPSettings
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fedopt import FedAvgM, MomentumOptions

HP = {"lr": 0.1, "batch_size": 4, "local_epochs": 1}
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def _global(size: int = 3) -> Params:
    return {"a": np.zeros(size, np.float32), "b": np.zeros((2, 2), np.float32)}


def _update(site: str, params: Params, kind: UpdateKind = UpdateKind.FULL) -> ClientUpdate:
    return ClientUpdate(
        site=site, params=params, kind=kind, num_examples=10, num_steps=1, metrics={}
    )


def _dp(
    *, z: float = 1.0, clip: float = 1.0, m: int = 4, noise_at: str = "server", **kw: object
) -> ClientDP:
    return ClientDP(
        inner=FedAvg(hparams=HP),
        settings=ClientDPSettings(noise_multiplier=z, clip_norm=clip, noise_at=noise_at, **kw),  # type: ignore[arg-type]
        delta=1e-5,
        accountant="rdp",
        sites_per_round=m,
        noise=NoiseSource.seeded(seed=0),  # reproducible: these tests check exact numbers
    )


tensors = st.fixed_dictionaries(
    {
        "a": arrays(np.float32, (3,), elements=finite),
        "b": arrays(np.float32, (2, 2), elements=finite),
    }
)


@settings(max_examples=200, deadline=None)
@given(params=tensors, clip=st.floats(1e-3, 1e3))
def test_every_clipped_norm_stays_within_the_bound(params: Params, clip: float) -> None:
    clipped, norm = clip_to_norm(params, clip)
    assert global_norm(clipped) <= clip * (1 + 1e-6)
    assert norm == pytest.approx(global_norm(params))
    if norm <= clip:
        assert all(np.array_equal(clipped[k], params[k]) for k in params)


@settings(max_examples=100, deadline=None)
@given(deltas=st.lists(tensors, min_size=1, max_size=5), clip=st.floats(1e-2, 1e2))
def test_server_side_dp_fedavg_moves_the_model_by_at_most_the_clip(
    deltas: list[Params], clip: float
) -> None:
    # With (almost) no noise, the mean of clipped deltas over m sites has norm <= clip.
    strategy = _dp(z=1e-12, clip=clip, m=len(deltas))
    state = strategy.init(_global())
    updates = [_update(f"s{i}", d, UpdateKind.DELTA) for i, d in enumerate(deltas)]
    new_state, params = strategy.aggregate(1, state, updates)
    assert global_norm(params) <= clip * (1 + 1e-5) + 1e-9
    assert new_state.clip_norm == clip


@settings(max_examples=100, deadline=None)
@given(delta=tensors, clip=st.floats(1e-2, 1e2))
def test_a_site_clips_its_own_update_within_the_bound(delta: Params, clip: float) -> None:
    noise = SiteNoise(clip_norm=clip, noise_multiplier=1e-12, num_sites=3)
    sent, extras = noise.apply(delta, rng=np.random.default_rng(0))
    assert global_norm(sent) <= clip * (1 + 1e-5) + 1e-9
    assert extras[Extra.DP_UNCLIPPED][0] == (1.0 if global_norm(delta) <= clip else 0.0)


@settings(max_examples=50, deadline=None)
@given(
    deltas=st.lists(tensors, min_size=2, max_size=5),
    order=st.randoms(use_true_random=False),
)
def test_dp_fedavg_does_not_depend_on_the_order_updates_arrive_in(
    deltas: list[Params], order: object
) -> None:
    strategy = _dp(z=0.7, clip=2.0, m=len(deltas), adaptive_clip=True)
    state = strategy.init(_global())
    updates = [_update(f"s{i}", d, UpdateKind.DELTA) for i, d in enumerate(deltas)]
    shuffled = list(updates)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    a_state, a = strategy.aggregate(3, state, updates)
    b_state, b = strategy.aggregate(3, state, shuffled)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a_state.clip_norm == b_state.clip_norm
    assert a_state.ledgers == b_state.ledgers


def test_server_noise_std_matches_sigma_times_clip() -> None:
    sigma, clip, m = 1.5, 0.4, 4
    start = {"w": np.zeros(40_000, np.float64)}
    strategy = _dp(z=sigma, clip=clip, m=m)
    state = strategy.init(start)
    updates = [_update(f"s{i}", copy_params(start)) for i in range(m)]  # no change at all
    _, params = strategy.aggregate(1, state, updates)
    noise_on_sum = params["w"] * m  # the mean is (sum + noise) / m
    assert np.std(noise_on_sum) == pytest.approx(sigma * clip, rel=0.02)
    assert abs(np.mean(noise_on_sum)) < 4 * sigma * clip / math.sqrt(start["w"].size)


def test_site_noise_shares_add_up_to_sigma_times_clip() -> None:
    sigma, clip, m = 1.5, 0.4, 5
    zero = {"w": np.zeros(40_000, np.float64)}
    share = SiteNoise(clip_norm=clip, noise_multiplier=sigma, num_sites=m)
    total = sum(share.apply(zero, rng=np.random.default_rng(i))[0]["w"] for i in range(m))
    assert np.std(total) == pytest.approx(sigma * clip, rel=0.02)
    one = share.apply(zero, rng=np.random.default_rng(99))[0]["w"]
    assert np.std(one) == pytest.approx(sigma * clip / math.sqrt(m), rel=0.02)


def test_sites_noise_their_own_updates_when_the_server_is_not_trusted() -> None:
    strategy = _dp(z=1.0, clip=0.5, m=2, noise_at="site")
    state = strategy.init(_global())
    hparams = strategy.configure(1, state, ["s0", "s1"])["s0"].hparams
    assert hparams[HParam.DP] == DPMode.CLIENT
    assert hparams[HParam.DP_CLIP_NORM] == 0.5
    assert hparams[HParam.DP_NUM_SITES] == 2
    with pytest.raises(ValueError, match="did not clip and noise its own update"):
        strategy.aggregate(1, state, [_update("s0", _global())])


def test_adaptive_clip_shrinks_when_every_update_fits_and_grows_when_every_one_is_clipped() -> None:
    small = {"a": np.full(3, 1e-3, np.float32), "b": np.zeros((2, 2), np.float32)}
    large = {"a": np.full(3, 1e3, np.float32), "b": np.zeros((2, 2), np.float32)}
    strategy = _dp(z=0.5, clip=1.0, m=4, adaptive_clip=True, adaptive_clip_count_noise=0.5)
    state = strategy.init(_global())
    fits, _ = strategy.aggregate(1, state, [_update(f"s{i}", small) for i in range(4)])
    clipped, _ = strategy.aggregate(1, state, [_update(f"s{i}", large) for i in range(4)])
    assert fits.clip_norm < 1.0 < clipped.clip_norm


def test_the_count_noise_takes_its_part_of_the_noise_budget() -> None:
    z_u = update_noise_multiplier(noise_multiplier=1.0, count_noise=2.0)
    assert (z_u**-2 + 4.0**-2) ** -0.5 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no budget"):
        update_noise_multiplier(noise_multiplier=5.0, count_noise=2.0)


def test_each_site_spends_only_in_rounds_it_took_part_in() -> None:
    strategy = _dp(z=1.0, clip=1.0, m=2)
    state = strategy.init(_global())
    state, _ = strategy.aggregate(1, state, [_update("s0", _global()), _update("s1", _global())])
    state, _ = strategy.aggregate(2, state, [_update("s0", _global())])
    assert state.ledgers["s0"] == Ledger(history=((1.0, 1.0, 2),))
    assert state.ledgers["s1"] == Ledger(history=((1.0, 1.0, 1),))
    record = strategy.privacy_record(state)
    assert record["epsilon"] == record["sites"]["s0"]["epsilon"]  # type: ignore[index]
    assert record["sample_rate"] == 1.0


def test_with_noise_at_sites_a_missing_share_is_accounted_as_less_noise() -> None:
    strategy = _dp(z=1.0, clip=1.0, m=4, noise_at="site")
    state = strategy.init(_global())
    share = SiteNoise(clip_norm=1.0, noise_multiplier=1.0, num_sites=4)
    sent, bit = share.apply(_global(), rng=np.random.default_rng(0))
    update = ClientUpdate(
        site="s0",
        params=sent,
        kind=UpdateKind.DELTA,
        num_examples=5,
        num_steps=1,
        metrics={},
        extras=bit,
    )
    state, _ = strategy.aggregate(1, state, [update])
    assert state.ledgers["s0"].history == ((0.5, 1.0, 1),)  # sqrt(1 / 4) of the noise arrived
    assert state.server_view["s0"].history == ((0.5, 1.0, 1),)  # its own share, z / sqrt(m)


def test_state_record_round_trip_continues_bit_for_bit() -> None:
    strategy = ClientDP(
        inner=FedAvgM(hparams=HP, options=MomentumOptions(server_lr=1.0, server_momentum=0.9)),
        settings=ClientDPSettings(noise_multiplier=0.8, clip_norm=0.3, adaptive_clip=True),
        delta=1e-5,
        accountant="rdp",
        sites_per_round=2,
        noise=NoiseSource.seeded(seed=5),  # the same noise both ways: bit for bit
    )
    rng = np.random.default_rng(0)

    def updates() -> list[ClientUpdate]:
        return [
            _update(
                s,
                {
                    "a": rng.normal(size=3).astype(np.float32),
                    "b": rng.normal(size=(2, 2)).astype(np.float32),
                },
            )
            for s in ("s0", "s1")
        ]

    state = strategy.init(_global())
    state, _ = strategy.aggregate(1, state, updates())
    round_two = updates()
    straight, a = strategy.aggregate(2, state, round_two)
    restored = strategy.state_from_record(strategy.state_to_record(state))
    again, b = strategy.aggregate(2, restored, round_two)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert straight.clip_norm == again.clip_norm
    assert straight.ledgers == again.ledgers
