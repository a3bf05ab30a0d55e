"""The DP noise is secret: what the server and the run directory hold cannot regenerate it.

Each test plays an attacker who knows everything the server knows (the config,
the seed and settings in ``summary.json``, the updates it received) and
regenerates the noise the way flmi once drew it, from the run seed, the party
and the round, then subtracts it. With the default (OS randomness) that gains
nothing; with ``privacy.insecure_reproducible_noise = true`` it removes the
noise down to float rounding, which shows the attack is a real one.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flmi.config import config_from_dict
from flmi.core.keys import DPMode, HParam, PrivacyKey
from flmi.core.messages import ClientUpdate, TrainInstruction, UpdateKind
from flmi.core.params import Params, subtract
from flmi.core.rng import derive_seed, generator
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.privacy.accounting import Ledger
from flmi.privacy.clip import clip_to_norm, gaussian_noise
from flmi.privacy.dp_sgd import DPSGD, SampleDPSettings
from flmi.privacy.noise_source import NoiseSource
from flmi.privacy.strategies import ClientDP, ClientDPSettings
from flmi.simulation import run_experiment
from flmi.site.site import Site
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.base import LocalTraining
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.registry import build_task
from flmi.tasks.torch_params import params_copy
from tests.conftest import tiny_tables

CPU = torch.device("cpu")


def _norm(params: Params) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in params.values()))


def _minus(a: Params, b: Params) -> Params:
    return {k: np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64) for k in sorted(a)}


class _ServerView:
    """What the server's DP-FedAvg wrapper was sent and received, round by round."""

    def __init__(self) -> None:
        self.instructions: dict[int, dict[str, TrainInstruction]] = {}
        self.updates: dict[int, list[ClientUpdate]] = {}

    def spy_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        configure, aggregate = ClientDP.configure, ClientDP.aggregate

        def spy_configure(self_: ClientDP, rnd: int, state: Any, sites: Any) -> Any:
            out = configure(self_, rnd, state, sites)
            self.instructions[rnd] = dict(out)
            return out

        def spy_aggregate(self_: ClientDP, rnd: int, state: Any, updates: Any) -> Any:
            self.updates[rnd] = list(updates)
            return aggregate(self_, rnd, state, updates)

        monkeypatch.setattr(ClientDP, "configure", spy_configure)
        monkeypatch.setattr(ClientDP, "aggregate", spy_aggregate)


def _regenerate_site_noise(update: ClientUpdate, *, rnd: int, summary: dict[str, Any]) -> Params:
    """The attack: a site's DP-FedAvg noise share as flmi drew it from the run seed."""
    privacy = summary["privacy"]
    m = len(privacy["sites"])  # every site takes part in every round here
    std = privacy["noise_multiplier"] * privacy["clip_norm"] / math.sqrt(m)
    rng = generator(seed=summary["seed"], party=update.site, rnd=rnd, purpose="dp")
    return gaussian_noise(update.params, std=std, rng=rng)


def _true_clipped_change(config: Any, instruction: TrainInstruction, site: str) -> Params:
    """The site's clipped change without noise: the same training, with no DP post-processing.

    Training is seeded by (seed, site, round) and the noise is added after it, so
    a twin of the site trained on the same instruction with ``dp = "none"`` makes
    exactly the change the real site clipped and noised.
    """
    data, _ = semi_supervised_data(config, load_data(config))
    twin = Site(
        name=site,
        data=data.sites[site],
        task=build_task(config, data),
        seed=config.federation.seed,
        device=CPU,
    )
    plain = twin.train(replace(instruction, hparams={**instruction.hparams, HParam.DP: "none"}))
    assert isinstance(plain, ClientUpdate) and plain.kind is UpdateKind.FULL
    change = subtract(plain.params, {k: instruction.params[k] for k in plain.params})
    clipped, _ = clip_to_norm(change, float(instruction.hparams[HParam.DP_CLIP_NORM]))
    return clipped


@pytest.mark.parametrize("insecure", [False, True], ids=["default", "insecure_reproducible"])
def test_a_server_holding_the_run_directory_cannot_remove_the_sites_dp_fedavg_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, insecure: bool
) -> None:
    # Arrange: DP-FedAvg with every site noising its own change (an untrusted server).
    privacy: dict[str, Any] = {
        "dp": "client",
        "noise_at": "site",
        "noise_multiplier": 1.0,
        "clip_norm": 0.5,
    }
    if insecure:
        privacy["insecure_reproducible_noise"] = True
    config = config_from_dict(tiny_tables(privacy=privacy, report={"bootstrap_resamples": 0}))
    server = _ServerView()
    server.spy_on(monkeypatch)

    # Act: run it, then attack every update the server received with what it holds.
    run_experiment(config=config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    errors_before, errors_after = [], []
    for rnd, updates in sorted(server.updates.items()):
        for update in updates:
            truth = _true_clipped_change(config, server.instructions[rnd][update.site], update.site)
            denoised = _minus(
                update.params, _regenerate_site_noise(update, rnd=rnd, summary=summary)
            )
            errors_before.append(_norm(_minus(update.params, truth)))
            errors_after.append(_norm(_minus(denoised, truth)))

    # Assert: the error before the attack is the noise (std z C / sqrt(m) = 0.25 per value).
    assert len(errors_before) == 2 * 4
    size = sum(v.size for v in server.updates[1][0].params.values())
    assert all(e == pytest.approx(0.25 * math.sqrt(size), rel=0.2) for e in errors_before)
    ratios = [after / before for after, before in zip(errors_after, errors_before, strict=True)]
    if insecure:
        assert max(ratios) < 1e-4  # the noise is gone, down to float32 rounding
        assert summary["privacy"]["noise_source"] == "run_seed"
        assert "no privacy guarantee" in summary["privacy"]["guarantee"]
        card = (tmp_path / "run" / "model_card.md").read_text()
        assert "no privacy guarantee" in card
    else:
        # Subtracting independent noise adds its variance: about sqrt(2) times the error.
        assert min(ratios) > 1.1
        assert summary["privacy"]["noise_source"] == "os_csprng"
        assert "guarantee" not in summary["privacy"]


def _server_round(noise: NoiseSource, updates: list[ClientUpdate], start: Params) -> Params:
    strategy = ClientDP(
        inner=FedAvg(hparams={HParam.LR: 0.1}),
        settings=ClientDPSettings(noise_multiplier=1.0, clip_norm=0.5),
        delta=1e-5,
        accountant="rdp",
        sites_per_round=len(updates),
        noise=noise,
    )
    _, params = strategy.aggregate(1, strategy.init(start), updates)
    return params


@pytest.mark.parametrize("insecure", [False, True], ids=["default", "insecure_reproducible"])
def test_the_servers_own_dp_fedavg_noise_is_not_regenerated_from_the_run_seed(
    insecure: bool,
) -> None:
    # Arrange: two sites' full models; the server clips the changes and noises their sum.
    rng = np.random.default_rng(3)
    start: Params = {"w": np.zeros(4000, np.float32)}
    updates = [
        ClientUpdate(
            site=s,
            params={"w": rng.normal(0.0, 0.1, 4000).astype(np.float32)},
            kind=UpdateKind.FULL,
            num_examples=10,
            num_steps=1,
            metrics={},
        )
        for s in ("s0", "s1")
    ]
    truth = sum(np.asarray(clip_to_norm(u.params, 0.5)[0]["w"], np.float64) for u in updates)
    seed = 11
    noise = NoiseSource.seeded(seed=seed) if insecure else NoiseSource()

    # Act: the move of the global model, times m, is the clipped sum plus the noise.
    moved = np.asarray(_server_round(noise, updates, start)["w"], np.float64) * 2
    old_way = generator(seed=seed, party="server", rnd=1, purpose="dp-noise")
    regenerated = gaussian_noise({"w": truth}, std=1.0 * 0.5, rng=old_way)["w"]

    # Assert
    before = float(np.linalg.norm(moved - truth))
    after = float(np.linalg.norm(moved - regenerated - truth))
    assert before == pytest.approx(0.5 * math.sqrt(4000), rel=0.1)
    if insecure:
        assert after < 1e-4 * before
    else:
        assert after > 1.2 * before


def _dp_sgd_site(noise: NoiseSource) -> Site:
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=rng.random((40, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 40).astype(np.int64)
    )
    return Site(
        name="h1",
        data=SiteSplits(train=data, val=data, test=data),
        task=ClassificationTask(
            num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
        ),
        seed=0,
        device=CPU,
        noise=noise,
    )


DP_SGD: dict[str, float | int | str] = {
    "lr": 0.05,
    "batch_size": 8,
    "local_epochs": 1,
    "optimizer": "sgd",
    "momentum": 0.0,
    HParam.DP: DPMode.SAMPLE.value,
    HParam.DP_NOISE_MULTIPLIER: 1.3,
    HParam.DP_MAX_GRAD_NORM: 0.7,
    HParam.DP_DELTA: 1e-5,
    HParam.DP_ACCOUNTANT: "rdp",
}


def test_dp_sgd_noise_is_fresh_every_run_and_not_the_one_the_seed_gives() -> None:
    # Arrange: one instruction; the site's training (data order, Poisson samples) is
    # seeded by (seed, site, round) either way, only the gradient noise's source differs.
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    instruction = TrainInstruction(
        rnd=1, params=params_copy(task.build_model(seed=1)), hparams=DP_SGD
    )

    # Act
    replies = {
        name: _dp_sgd_site(noise).train(instruction)
        for name, noise in (
            ("seeded_a", NoiseSource.seeded(seed=0)),
            ("seeded_b", NoiseSource.seeded(seed=0)),
            ("secure_a", NoiseSource()),
            ("secure_b", NoiseSource()),
        )
    }

    # Assert: the run seed regenerates seeded noise exactly, and never the secure noise;
    # the accounting is the same whichever source drew the noise.
    updates = {k: v for k, v in replies.items() if isinstance(v, ClientUpdate)}
    assert len(updates) == 4
    gap = {
        pair: _norm(_minus(updates[pair[0]].params, updates[pair[1]].params))
        for pair in (("seeded_a", "seeded_b"), ("secure_a", "seeded_a"), ("secure_a", "secure_b"))
    }
    assert gap[("seeded_a", "seeded_b")] == 0.0
    assert gap[("secure_a", "seeded_a")] > 0.0 and gap[("secure_a", "secure_b")] > 0.0
    assert gap[("secure_a", "seeded_a")] == pytest.approx(gap[("secure_a", "secure_b")], rel=0.5)
    assert {u.metrics[PrivacyKey.EPSILON] for u in updates.values()} == {
        updates["seeded_a"].metrics[PrivacyKey.EPSILON]
    }


@pytest.mark.parametrize("dp", ["sample", "client"])
def test_a_dp_update_carries_no_training_loss_only_the_accounting_report(dp: str) -> None:
    # Arrange
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    client: dict[str, float | int | str] = {
        **{k: v for k, v in DP_SGD.items() if not k.startswith("dp")},
        HParam.DP: DPMode.CLIENT.value,
        HParam.DP_CLIP_NORM: 0.5,
        HParam.DP_NOISE_MULTIPLIER: 1.0,
        HParam.DP_NUM_SITES: 2,
    }
    hparams = DP_SGD if dp == "sample" else client
    params = params_copy(task.build_model(seed=1))
    site = _dp_sgd_site(NoiseSource())

    # Act
    private = site.train(TrainInstruction(rnd=1, params=params, hparams=hparams))
    plain = site.train(
        TrainInstruction(rnd=2, params=params, hparams={**hparams, HParam.DP: "none"})
    )

    # Assert: without DP the loss is reported; under DP only what the accountant needs.
    assert isinstance(private, ClientUpdate) and isinstance(plain, ClientUpdate)
    assert "loss" in plain.metrics
    expected = (
        {PrivacyKey.EPSILON, PrivacyKey.NOISE_MULTIPLIER, PrivacyKey.SAMPLE_RATE, PrivacyKey.STEPS}
        if dp == "sample"
        else set()
    )
    assert set(private.metrics) == {k.value for k in expected}


def test_dp_sgd_uses_opacus_secure_mode_and_fresh_noise_state_every_step() -> None:
    # Arrange
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )
    settings = SampleDPSettings.from_hparams(DP_SGD)
    assert settings is not None
    training = LocalTraining.from_hparams(DP_SGD)

    def session(noise: NoiseSource) -> Any:
        model = task.build_model(seed=0)
        return DPSGD(settings=settings, ledger=Ledger(), noise=noise).start(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            num_examples=40,
            training=training,
            generator=torch.Generator().manual_seed(0),
        )

    # Act
    secure, seeded = session(NoiseSource()), session(NoiseSource.seeded(seed=0))
    state = secure.optimizer.generator.get_state().clone()
    NoiseSource().refresh(secure.optimizer.generator)

    # Assert: the secure session's noise generator is no 32-bit seed's state, and moves on.
    assert secure.optimizer.secure_mode is True and seeded.optimizer.secure_mode is False
    assert not torch.equal(state, secure.optimizer.generator.get_state())
    drawn = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(0)))
    reseeded = torch.Generator().manual_seed(drawn).get_state()
    assert torch.equal(seeded.optimizer.generator.get_state(), reseeded)
    assert not torch.equal(state, reseeded)
    secure.close()
    seeded.close()


def test_secure_numpy_generators_never_repeat_and_seeded_ones_are_the_run_seeds() -> None:
    secure = NoiseSource()
    a = secure.numpy_generator(party="h1", rnd=1, purpose="dp").normal(size=8)
    b = secure.numpy_generator(party="h1", rnd=1, purpose="dp").normal(size=8)
    seeded = NoiseSource.seeded(seed=4).numpy_generator(party="h1", rnd=1, purpose="dp")
    old = np.random.default_rng(derive_seed(seed=4, party="h1", rnd=1, purpose="dp"))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(seeded.normal(size=8), old.normal(size=8))
    assert secure.is_secure and not NoiseSource.seeded(seed=4).is_secure


def test_a_run_with_seeded_noise_warns_loudly_at_its_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = {"dp": "client", "noise_at": "site", "insecure_reproducible_noise": True}
    config = config_from_dict(
        tiny_tables(privacy=privacy, federation={"rounds": 1}, report={"bootstrap_resamples": 0})
    )
    with caplog.at_level("WARNING", logger="flmi.privacy"):
        run_experiment(config=config, out=None)
    assert any(
        r.levelname == "WARNING" and "INSECURE" in r.message and "no privacy guarantee" in r.message
        for r in caplog.records
    )
