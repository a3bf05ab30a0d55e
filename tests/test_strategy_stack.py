"""The strategy ``make_strategy`` builds behaves as the registered strategy it wraps.

Every registered strategy is built twice from a config: bare, and through the
layers a run adds (``[sites.NAME]`` overrides, the semi-supervised unlabeled
wrappers, the DP wrappers). The wrapped one must be as personalised as the
bare one, score every site with the same model and settings, and send and
aggregate the same tensors; only what a layer is for may differ (the
overridden hyperparameters, the DP settings in the instructions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.core.federation import evaluate_strategy_sites, is_personalised
from flmi.core.keys import Extra, HParam, PrivacyKey, Split
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
from flmi.core.strategy import Strategy, capabilities_of
from flmi.privacy.compat import SAMPLE_DP_REFUSED, client_dp_refusal
from flmi.strategies.ifca import CLUSTER_METRIC
from flmi.strategies.registry import STRATEGIES
from flmi.wiring import make_strategy

SITES = tuple(f"hospital_{i}" for i in range(1, 6))
OVERRIDDEN = "hospital_1"
OVERRIDE = {"lr": 0.001, "local_epochs": 2}
UNLABELED = "hospital_5"
# What each layer adds to a config.
LAYERS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "per_site": {"sites": {OVERRIDDEN: OVERRIDE}},
    "unlabeled_weight": {
        "federation": {"semi_supervised": "pseudo_label", "unlabeled_weight": 0.5},
        "sites": {UNLABELED: {"labeled": False}},
    },
    "unlabeled_add": {
        "federation": {
            "semi_supervised": "pseudo_label",
            "unlabeled_weight": 0.5,
            "unlabeled_aggregation": "add",
        },
        "sites": {UNLABELED: {"labeled": False}},
    },
    "sample_dp": {"privacy": {"dp": "sample"}},
    "client_dp": {"privacy": {"dp": "client", "noise_at": "site"}},
}
# Instruction settings a DP layer adds, on purpose, and the capabilities it declares.
DP_HPARAMS = {h.value for h in HParam if h.value.startswith("dp")}
DP_CAPABILITIES = frozenset({"privacy_record", "note_secure_round"})


def _tables(name: str, layers: Sequence[str]) -> dict[str, Any]:
    spec = STRATEGIES[name]
    tables: dict[str, Any] = {
        "data": {"source": "synthetic", "image_size": 16, "n_patients": 240},
        "partition": {"method": "natural", "num_sites": len(SITES), "min_examples_per_site": 5},
        "task": {"name": "classification", "num_classes": 2, "positive_label": 1, "width": 4},
        "strategy": {"name": name},
        "federation": {
            "rounds": 3,
            "lr": 0.05,
            "optimizer": "sgd",
            "momentum": 0.0,
            "min_sites": spec.min_updates(spec.resolve_options({})),
        },
        # Two groups, for FedNorm's branches (the other strategies ignore them).
        "sites": {s: {"group": "ct" if i % 2 else "mri"} for i, s in enumerate(SITES)},
    }
    for layer in layers:
        for table, values in LAYERS[layer].items():
            if table == "sites":
                for site, keys in values.items():
                    tables["sites"][site].update(keys)
            else:
                tables.setdefault(table, {}).update(values)
    return tables


def _build(name: str, layers: Sequence[str]) -> Strategy[Any]:
    return make_strategy(config_from_dict(_tables(name, layers)), list(SITES))


def _build_bare(name: str, layers: Sequence[str]) -> Strategy[Any]:
    """The same config with nothing that wraps: no override, unlabeled weight 1, no DP.

    The sites still learn from unlabeled images where the layers say so (the
    same local-training settings as the wrapped run); only the server's
    wrappers are gone.
    """
    tables = _tables(name, layers)
    for key in OVERRIDE:
        tables["sites"][OVERRIDDEN].pop(key, None)
    tables["federation"].update(unlabeled_weight=1.0, unlabeled_aggregation="mean")
    tables.pop("privacy", None)
    return make_strategy(config_from_dict(tables), list(SITES))


def _one_global_model(name: str) -> bool:
    """Whether the bare strategy takes the unlabeled wrappers (one global model)."""
    try:
        _build(name, ["unlabeled_weight"])
    except ConfigError:
        return False
    return True


def _stacks() -> list[tuple[str, tuple[str, ...]]]:
    """Every registered strategy under each stack of layers its config allows."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for name in sorted(STRATEGIES):
        global_model = _one_global_model(name)
        sample = name not in SAMPLE_DP_REFUSED
        client = client_dp_refusal(name) is None
        unlabeled: tuple[str, ...] = ("unlabeled_weight",) if global_model else ()
        added: tuple[str, ...] = ("unlabeled_add",) if global_model else ()
        for stack in (
            ("per_site",),
            ("per_site", *unlabeled, *(("sample_dp",) if sample else ())),
            ("per_site", *added, *(("client_dp",) if client else ())),
        ):
            if (name, stack) not in out:
                out.append((name, stack))
    return out


STACKS = _stacks()


def _layers(strategy: object) -> list[str]:
    """The wrapper types around the registered strategy, outermost first."""
    names: list[str] = []
    while hasattr(strategy, "_inner"):
        names.append(type(strategy).__name__)
        strategy = strategy._inner
    return names


EXPECTED_WRAPPERS = {
    "per_site": "PerSiteSettings",
    "unlabeled_weight": "UnlabeledWeight",
    "unlabeled_add": "UnlabeledAdded",
    "sample_dp": "SampleDP",
    "client_dp": "ClientDP",
}


def _initial() -> Params:
    return {
        "features.0.weight": np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3),
        "norm.weight": np.array([1.0, 0.5, 2.0], dtype=np.float64),
    }


def _updates(name: str, instructions: Mapping[str, TrainInstruction]) -> list[ClientUpdate]:
    """Each instructed site's new weights: the weights sent plus its own step.

    With the reports strategies and DP layers read: a DP-SGD report, IFCA's
    cluster choice, FedNorm's group branch.
    """
    out: list[ClientUpdate] = []
    for i, (site, ins) in enumerate(sorted(instructions.items())):
        params = {k: (v + 0.25 * (i + 1)).astype(v.dtype) for k, v in sorted(ins.params.items())}
        extras: Params = {}
        if name == "fednorm":
            extras = {Extra.NORM.value + "norm.weight": params["norm.weight"] * 3.0}
        out.append(
            ClientUpdate(
                site=site,
                params=params,
                kind=UpdateKind.FULL,
                num_examples=10 + 7 * i,
                num_steps=3,
                metrics={
                    PrivacyKey.NOISE_MULTIPLIER: 1.1,
                    PrivacyKey.SAMPLE_RATE: 0.1,
                    PrivacyKey.STEPS: 3.0,
                    CLUSTER_METRIC: float(i % 2),
                },
                extras=extras,
            )
        )
    return out


def _same_tensors(what: str, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b), f"{what}: tensor names differ"
    for key in sorted(a):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: '{key}' differs in type"
        assert x.tobytes() == y.tobytes(), f"{what}: '{key}' differs"


class _RecordingSites:
    """Every site answers evaluation and remembers what it was asked to score."""

    def __init__(self) -> None:
        self.asked: dict[str, EvaluateInstruction] = {}

    def site_names(self) -> Sequence[str]:
        return SITES

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        raise AssertionError("only evaluation is asked for")

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        self.asked.update(instructions)
        return {
            s: EvaluateResult(site=s, split=i.split, num_examples=1, metrics={})
            for s, i in instructions.items()
        }


def _scored_with(strategy: Strategy[Any], state: Any, params: Params) -> dict[str, Any]:
    sites = _RecordingSites()
    evaluate_strategy_sites(
        strategy=strategy, state=state, runtime=sites, params=params, rnd=1, split=Split.TEST
    )
    return dict(sites.asked)


def _check_instructions(
    bare: Mapping[str, TrainInstruction],
    wrapped: Mapping[str, TrainInstruction],
    layers: Sequence[str],
) -> None:
    assert sorted(wrapped) == sorted(bare)
    dp = "sample_dp" in layers or "client_dp" in layers
    for site in sorted(bare):
        _same_tensors(f"params sent to {site}", wrapped[site].params, bare[site].params)
        _same_tensors(f"extras sent to {site}", wrapped[site].extras, bare[site].extras)
        expected = {**bare[site].hparams, **(OVERRIDE if site == OVERRIDDEN else {})}
        got = dict(wrapped[site].hparams)
        if dp:
            assert DP_HPARAMS & set(got), f"no DP setting reached {site}"
            got = {k: v for k, v in got.items() if k not in DP_HPARAMS}
        assert got == expected, f"hyperparameters sent to {site}"


@pytest.mark.parametrize(
    ("name", "layers"), STACKS, ids=[f"{n}[{'+'.join(layers)}]" for n, layers in STACKS]
)
def test_the_built_stack_behaves_as_the_registered_strategy(
    name: str, layers: tuple[str, ...]
) -> None:
    bare, wrapped = _build_bare(name, layers), _build(name, layers)
    assert _layers(bare) == []
    assert _layers(wrapped) == [EXPECTED_WRAPPERS[x] for x in reversed(layers)]
    assert wrapped.name == bare.name
    assert is_personalised(wrapped) == is_personalised(bare)
    mine, theirs = capabilities_of(bare), capabilities_of(wrapped)
    dp = {"sample_dp", "client_dp"} & set(layers)
    assert theirs.declared == mine.declared | (DP_CAPABILITIES if dp else frozenset())
    assert theirs.one_global_model == mine.one_global_model
    assert dict(theirs.evaluation_hparams) == dict(mine.evaluation_hparams)

    initial = _initial()
    bare_state, wrapped_state = bare.init(initial), wrapped.init(initial)
    sent = bare.configure(1, bare_state, SITES)
    _check_instructions(sent, wrapped.configure(1, wrapped_state, SITES), layers)
    # Scored before any round: the same model and settings for every site.
    before_bare = _scored_with(bare, bare_state, initial)
    before_wrapped = _scored_with(wrapped, wrapped_state, initial)
    if "client_dp" in layers:
        return  # DP-FedAvg clips and noises the aggregate, on purpose
    updates = _updates(name, sent)
    bare_state, bare_params = bare.aggregate(1, bare_state, updates)
    wrapped_state, wrapped_params = wrapped.aggregate(1, wrapped_state, updates)
    _same_tensors("aggregated weights", wrapped_params, bare_params)
    after_bare = _scored_with(bare, bare_state, bare_params)
    after_wrapped = _scored_with(wrapped, wrapped_state, wrapped_params)
    for got, expected in ((before_wrapped, before_bare), (after_wrapped, after_bare)):
        assert sorted(got) == sorted(expected) == sorted(SITES)
        for site in SITES:
            _same_tensors(f"model {site} is scored with", got[site].params, expected[site].params)
            assert got[site].personal == expected[site].personal
            assert dict(got[site].hparams) == dict(expected[site].hparams)
    _check_instructions(
        bare.configure(2, bare_state, SITES), wrapped.configure(2, wrapped_state, SITES), layers
    )


@pytest.mark.parametrize("name", [n for n in sorted(STRATEGIES) if not _one_global_model(n)])
@pytest.mark.parametrize("layer", ["unlabeled_weight", "unlabeled_add"])
def test_a_strategy_with_models_per_site_refuses_unlabeled_weighting_under_per_site_settings(
    name: str, layer: str
) -> None:
    with pytest.raises(ConfigError, match="applies to strategies with one global model"):
        _build(name, ["per_site", layer])


def test_the_stacks_cover_every_registered_strategy_and_layer() -> None:
    assert {name for name, _ in STACKS} == set(STRATEGIES)
    assert {layer for _, layers in STACKS for layer in layers} == set(LAYERS)
    # The cases above hold strategies of every kind (global, personalised, per-site models).
    assert {"fedavg", "fedbn", "ifca", "fednorm", "finetune", "ditto"} <= set(STRATEGIES)
