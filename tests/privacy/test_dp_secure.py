"""Differential privacy on top of secure or homomorphic aggregation: runs, noise and accounting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from flmi.cli import main
from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.core.exchange import SecureAggregation
from flmi.core.federation import FederationPlan, RoundRecord, run_federation
from flmi.core.keys import Extra, HParam
from flmi.core.messages import (
    ClientUpdate,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.privacy.he import CkksSettings, HEServer
from flmi.privacy.linear import LinearRule, equivalent_update, linear_terms
from flmi.privacy.noise_source import NoiseSource
from flmi.privacy.secagg import FixedPoint, SecAggServer, Stage
from flmi.privacy.setup import he_sites
from flmi.privacy.site import SecureSite
from flmi.privacy.site_noise import SiteNoise
from flmi.privacy.strategies import ClientDP, ClientDPSettings
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.simulation import run_experiment
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.registry import build_strategy
from tests.conftest import tiny_tables, write_config
from tests.privacy.fakes import DropAt

SIGMA, CLIP, SITES, SIZE = 1.0, 0.5, 4, 20_000


class _NoiseOnly:
    """A site whose training changes nothing, so all it sends is its share of DP-FedAvg's noise.

    Its example count differs from every other site's: DP-FedAvg's sum must ignore it.
    """

    def __init__(self, *, name: str, n: int) -> None:
        self.name, self.n = name, n

    def train(self, instruction: TrainInstruction) -> TrainReply:
        noise = SiteNoise.from_hparams(instruction.hparams)
        assert noise is not None
        zero = {k: np.zeros_like(v) for k, v in instruction.params.items()}
        rng = np.random.default_rng([instruction.rnd, self.n])
        params, bit = noise.apply(zero, rng=rng)
        return ClientUpdate(
            site=self.name,
            params=params,
            kind=UpdateKind.DELTA,
            num_examples=self.n,
            num_steps=1,
            metrics={},
            extras=bit,
        )

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        return EvaluateResult(site=self.name, split=instruction.split, num_examples=0, metrics={})


class _Keep:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        self.records.append(record)


def _protocol(aggregation: str) -> SecureAggregation:
    if aggregation == "secagg":
        fixed = FixedPoint(clip=10.0, bits=32)
        return SecAggServer(threshold=3, fixed=fixed, rule=LinearRule.UNWEIGHTED_MEAN)
    return HEServer(key_holder="site_0", rule=LinearRule.UNWEIGHTED_MEAN, settings=CkksSettings())


def _one_noisy_round(aggregation: str, drop: str | None) -> tuple[np.ndarray, RoundRecord]:
    sites: list[SiteEndpoint] = []
    noisy = [_NoiseOnly(name=f"site_{i}", n=n) for i, n in enumerate((1, 10, 100, 1000))]
    wrapped = (
        he_sites(noisy, key_holder="site_0", min_contributions=3)
        if aggregation == "he"
        else [SecureSite(site=s) for s in noisy]
    )
    for secure in wrapped:
        assert isinstance(secure, SecureSite)
        sites.append(DropAt(site=secure, stage=Stage.MASKED) if secure.name == drop else secure)
    start = {"w": np.zeros(SIZE, np.float32)}
    strategy = ClientDP(
        inner=FedAvg(hparams={}),
        settings=ClientDPSettings(noise_multiplier=SIGMA, clip_norm=CLIP, noise_at="site"),
        delta=1e-5,
        accountant="rdp",
        sites_per_round=SITES,
        noise=NoiseSource(),
    )
    keep = _Keep()
    result = run_federation(
        strategy=strategy,
        runtime=InProcessRuntime(sites=sites),
        initial_params=start,
        plan=FederationPlan(rounds=1, fraction=1.0, min_sites=2, seed=0),
        observer=keep,
        secure=_protocol(aggregation),
    )
    # The global model moved by (sum of the arrived sites' noise) / m.
    return np.asarray(result.params["w"], np.float64) * SITES, keep.records[0]


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
def test_the_sites_noise_shares_summed_securely_have_std_sigma_times_clip(
    aggregation: str,
) -> None:
    total, record = _one_noisy_round(aggregation, drop=None)

    assert np.std(total) == pytest.approx(SIGMA * CLIP, rel=0.03)
    assert abs(np.mean(total)) < 0.02
    assert sorted(record.privacy["sites"]) == [f"site_{i}" for i in range(SITES)]


def test_with_a_site_dropped_after_sharing_the_sum_carries_its_survivors_noise_and_says_so() -> (
    None
):
    total, record = _one_noisy_round("secagg", drop="site_2")

    assert np.std(total) == pytest.approx(SIGMA * CLIP * np.sqrt(3 / 4), rel=0.03)
    sites = record.privacy["sites"]
    assert isinstance(sites, dict) and sorted(sites) == ["site_0", "site_1", "site_3"]
    for entry in sites.values():
        assert isinstance(entry, dict) and isinstance(entry["history"], list)
        (z, rate, steps) = entry["history"][0]
        assert z == pytest.approx(SIGMA * np.sqrt(3 / 4)) and rate == 1.0 and steps == 1
        assert entry["epsilon_against_server"] == entry["epsilon"]  # the server sees the sum only


def _sets(overrides: list[str]) -> list[str]:
    return [part for text in overrides for part in ("--set", text)]


def _summary(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return result


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
def test_dp_sgd_under_secure_aggregation_charges_each_site_what_a_plain_run_does(
    tmp_path: Path, aggregation: str
) -> None:
    privacy = {"dp": "sample", "noise_multiplier": 1.1, "max_grad_norm": 1.0}
    plain = tiny_tables(privacy=privacy, federation={"rounds": 2, "batch_size": 32})
    secure = tiny_tables(
        privacy={**privacy, "aggregation": aggregation, "secagg_clip": 4.0},
        federation={"rounds": 2, "batch_size": 32},
    )
    run_experiment(config=config_from_dict(plain), out=tmp_path / "plain")
    run_experiment(config=config_from_dict(secure), out=tmp_path / "secure")

    a, b = _summary(tmp_path / "plain")["privacy"], _summary(tmp_path / "secure")["privacy"]
    assert b["dp"] == "sample" and b["epsilon"] > 0
    assert b["epsilon"] == pytest.approx(a["epsilon"])
    assert sorted(b["sites"]) == sorted(a["sites"])
    for site, entry in a["sites"].items():
        assert b["sites"][site]["history"] == entry["history"]


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
def test_dp_fedavg_with_noise_at_the_sites_under_secure_aggregation_ends_where_a_plain_run_does(
    tmp_path: Path, aggregation: str
) -> None:
    # Seeded noise (tests only), so both runs draw the same noise and only the protocol differs.
    privacy = {
        "dp": "client",
        "noise_at": "site",
        "noise_multiplier": 1.0,
        "clip_norm": 0.5,
        "adaptive_clip": True,
        "insecure_reproducible_noise": True,
    }
    federation = {"rounds": 2, "min_sites": 2}
    plain = tiny_tables(privacy=privacy, federation=federation)
    secure = write_config(tmp_path / "secure.toml", plain)
    run_experiment(config=config_from_dict(plain), out=tmp_path / "plain")
    overrides = [f"privacy.aggregation={aggregation}", "privacy.secagg_clip=5.0"]
    code = main(["run", str(secure), "--out", str(tmp_path / "secure"), *_sets(overrides)])
    assert code == 0

    x = load_file(str(tmp_path / "plain" / "model.safetensors"))
    y = load_file(str(tmp_path / "secure" / "model.safetensors"))
    for name in x:
        np.testing.assert_allclose(y[name], x[name], rtol=0, atol=1e-5)
    a, b = _summary(tmp_path / "plain")["privacy"], _summary(tmp_path / "secure")["privacy"]
    assert b["clip_norm"] == pytest.approx(a["clip_norm"], rel=1e-6) and b["clip_norm"] != 0.5
    assert b["epsilon"] == pytest.approx(a["epsilon"]) and b["epsilon"] > 0
    for site, entry in b["sites"].items():
        # Plain: the server sees each noised update; secure: only their sum.
        assert a["sites"][site]["epsilon_against_server"] > entry["epsilon_against_server"]
        assert entry["epsilon_against_server"] == pytest.approx(entry["epsilon"])


@pytest.mark.parametrize(
    ("privacy", "needle"),
    [
        ({"dp": "client", "aggregation": "secagg"}, r"privacy.noise_at = 'server' clips each"),
        ({"dp": "client", "aggregation": "he", "adaptive_clip": True}, r"set privacy.noise_at"),
        (
            {
                "dp": "client",
                "aggregation": "secagg",
                "noise_at": "site",
                "clip_norm": 0.5,
                "secagg_clip": 1.0,
            },
            r"privacy.secagg_clip = 1 cannot hold .* at least 2\.25 or lower privacy.clip_norm",
        ),
        (
            {
                "dp": "client",
                "aggregation": "secagg",
                "noise_at": "site",
                "clip_norm": 0.5,
                "secagg_clip": 3.0,
                "adaptive_clip": True,
            },
            r"adaptive_clip_count_noise / sqrt\(4\); raise privacy.secagg_clip to at least 4\.5",
        ),
        ({"dp": "client", "aggregation": "he", "noise_at": "site"}, None),
        ({"dp": "sample", "aggregation": "he"}, None),
    ],
)
def test_dp_with_secure_aggregation_is_refused_only_where_unsound_naming_the_keys(
    privacy: dict[str, Any], needle: str | None
) -> None:
    tables = tiny_tables(privacy=privacy)
    if needle is None:
        assert config_from_dict(tables).privacy.aggregation == privacy["aggregation"]
        return
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(tables)


def test_a_target_epsilon_too_noisy_for_the_fixed_point_range_stops_before_the_run_dir(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        privacy={
            "dp": "client",
            "aggregation": "secagg",
            "noise_at": "site",
            "target_epsilon": 0.5,
            "secagg_clip": 3.0,
        }
    )
    with pytest.raises(ConfigError, match="privacy.secagg_clip = 3 cannot hold"):
        run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _noised_updates(seed: int, count: int) -> tuple[Params, list[ClientUpdate]]:
    """Sites' clipped, noised deltas with their noised bits, and different example counts."""
    rng = np.random.default_rng(seed)
    x = {"w": rng.normal(size=(5, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    updates = [
        ClientUpdate(
            site=f"s{i}",
            params={
                k: rng.normal(scale=0.2, size=v.shape).astype(np.float32) for k, v in x.items()
            },
            kind=UpdateKind.DELTA,
            num_examples=int(rng.integers(1, 500)),
            num_steps=int(rng.integers(1, 5)),
            metrics={},
            extras={Extra.DP_UNCLIPPED.value: np.array([rng.normal(1.0, 0.5)])},
        )
        for i in range(count)
    ]
    return x, updates


@pytest.mark.parametrize("inner", ["fedavg", "fedavgm", "fedadam"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(2, 6))
def test_property_dp_fedavg_on_the_unweighted_hidden_sum_equals_it_on_the_updates(
    inner: str, seed: int, count: int
) -> None:
    x, updates = _noised_updates(seed, count)
    strategy = ClientDP(
        inner=build_strategy(name=inner, hparams={HParam.LR: 0.1}, options={}),
        settings=ClientDPSettings(
            noise_multiplier=1.0, clip_norm=0.3, noise_at="site", adaptive_clip=True
        ),
        delta=1e-5,
        accountant="rdp",
        sites_per_round=count + 1,  # one site of the round dropped out
        noise=NoiseSource(),
    )
    state = strategy.init(x)
    rule = LinearRule.UNWEIGHTED_MEAN
    terms = [linear_terms(u, reference=x, rule=rule) for u in updates]
    hidden = equivalent_update(
        layout=terms[0].layout,
        weighted_sum=np.sum([t.n * t.weighted for t in terms], axis=0),
        unweighted_sum=np.sum([t.unweighted for t in terms], axis=0),
        n_sum=sum(t.n for t in terms),
        n_tau_sum=sum(t.n_tau for t in terms),
        rule=rule,
        reference=x,
        site="secagg",
    )

    plain_state, plain = strategy.aggregate(1, state, updates)
    noted = strategy.note_secure_round(1, state, reports={}, contributors=[u.site for u in updates])
    secure_state, secure = strategy.aggregate(1, noted, [hidden])

    for k in x:
        np.testing.assert_allclose(secure[k], plain[k], rtol=1e-5, atol=1e-6)
    assert secure_state.clip_norm == pytest.approx(plain_state.clip_norm)
    assert {s: v.to_json() for s, v in secure_state.ledgers.items()} == {
        s: v.to_json() for s, v in plain_state.ledgers.items()
    }
