"""A strategy allowed under secure aggregation gets the same result from the hidden sum."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.core.errors import ConfigError
from flmi.core.keys import Extra, HParam
from flmi.core.messages import ClientUpdate, HParamValue, UpdateKind
from flmi.core.params import Params
from flmi.privacy.linear import LINEAR, REFUSED, equivalent_update, linear_rule, linear_terms
from flmi.strategies.registry import STRATEGIES, BuildContext, build_strategy

HPARAMS: dict[str, HParamValue] = {
    HParam.LR: 0.1,
    HParam.LOCAL_EPOCHS: 1,
    HParam.LOCAL_STEPS: 0,
    HParam.BATCH_SIZE: 8,
    HParam.OPTIMIZER: "sgd",
    HParam.MOMENTUM: 0.0,
    HParam.WEIGHT_DECAY: 0.0,
}
SHAPES = {"conv.weight": (3, 2), "bn.weight": (2,), "head.bias": (4,)}


def _updates(
    seed: int, count: int, *, kind: UpdateKind, partial: bool
) -> tuple[Params, list[ClientUpdate]]:
    rng = np.random.default_rng(seed)
    x = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    updates = []
    for i in range(count):
        names = [k for k in SHAPES if not (partial and k == "bn.weight")]
        delta = {k: rng.normal(scale=0.1, size=SHAPES[k]).astype(np.float32) for k in names}
        params = delta if kind is UpdateKind.DELTA else {k: x[k] + delta[k] for k in names}
        updates.append(
            ClientUpdate(
                site=f"s{i}",
                params=params,
                kind=kind,
                num_examples=int(rng.integers(1, 100)),
                num_steps=int(rng.integers(1, 10)),
                metrics={},
                extras={
                    Extra.SCAFFOLD_DELTA_C + k: rng.normal(size=SHAPES[k]).astype(np.float32)
                    for k in names
                },
            )
        )
    return x, updates


def _hidden_sum(name: str, x: Params, updates: Sequence[ClientUpdate]) -> ClientUpdate:
    """What the server recovers under secure aggregation, without the quantisation."""
    rule = LINEAR[name]
    terms = [linear_terms(u, reference=x, rule=rule) for u in updates]
    return equivalent_update(
        layout=terms[0].layout,
        weighted_sum=sum(t.n * t.weighted for t in terms),
        unweighted_sum=sum(t.unweighted for t in terms),
        n_sum=sum(t.n for t in terms),
        n_tau_sum=sum(t.n_tau for t in terms),
        rule=rule,
        reference=x,
        site="secagg",
    )


@pytest.mark.parametrize("name", sorted(LINEAR))
@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    count=st.integers(2, 5),
    kind=st.sampled_from([UpdateKind.FULL, UpdateKind.DELTA]),
)
def test_property_strategy_aggregates_the_hidden_sum_as_it_does_the_updates(
    name: str, seed: int, count: int, kind: UpdateKind
) -> None:
    spec = STRATEGIES[name]
    partial = name in ("fedbn", "fedpxn", "cusfl")
    x, updates = _updates(seed, count, kind=kind, partial=partial)
    if name != "scaffold":
        updates = [dataclasses.replace(u, extras={}) for u in updates]
    strategy = build_strategy(
        name=name,
        hparams=HPARAMS,
        options={},
        context=BuildContext(num_sites=6, seed=0, site_groups={}),
    )
    assert spec is not None
    state = strategy.init(x)

    _, from_updates = strategy.aggregate(1, state, updates)
    new_state, from_sum = strategy.aggregate(1, state, [_hidden_sum(name, x, updates)])

    for tensor in x:
        np.testing.assert_allclose(from_sum[tensor], from_updates[tensor], rtol=1e-5, atol=1e-6)
    record_a = strategy.state_to_record(strategy.aggregate(1, state, updates)[0]).tensors
    record_b = strategy.state_to_record(new_state).tensors
    for key in record_a:  # server state too: SCAFFOLD's variate, FedAdam's moments
        np.testing.assert_allclose(record_b[key], record_a[key], rtol=1e-5, atol=1e-6)


def test_every_strategy_is_either_allowed_or_refused_with_a_reason() -> None:
    assert set(LINEAR) | set(REFUSED) == set(STRATEGIES)
    assert not set(LINEAR) & set(REFUSED)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_non_linear_strategies_are_refused_saying_why(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        linear_rule(name, aggregation="secagg")

    message = str(caught.value)
    assert f"strategy.name = '{name}'" in message and REFUSED[name] in message
    assert "fedavg" in message and "privacy.aggregation = 'plain'" in message
