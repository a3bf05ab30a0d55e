"""Every registered strategy passes the conformance suite; an order-dependent one does not."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from flmi.core.messages import ClientUpdate, TrainInstruction
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.strategy import StateRecord
from flmi.strategies.registry import STRATEGIES, build_strategy
from flmi.testing import check_strategy

HPARAMS = {"lr": 0.1}
# IFCA's updates must name the cluster the site chose, and FedNorm needs every site's
# group (client reports and config the generic suite cannot fake);
# tests/strategies/test_ifca.py and test_fednorm.py check the same properties for them.
NEEDS_CLIENT_REPORT = {"ifca", "fednorm"}
# Every name with its defaults, plus variants whose options change the code path.
CASES: list[tuple[str, dict[str, Any]]] = [
    (name, {}) for name in sorted(STRATEGIES) if name not in NEEDS_CLIENT_REPORT
] + [
    ("krum", {"num_selected": 3}),
    ("krum", {"num_byzantine": 0}),
    ("trimmed_mean", {"trim_fraction": 0.0}),
    ("trimmed_mean", {"weighting": "uniform"}),
    ("median", {"weighting": "uniform"}),
    ("median", {"max_weight_share": 1.0}),
    ("fedavgm", {"server_momentum": 0.0}),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{o or ''}" for n, o in CASES])
def test_registered_strategy_passes_the_conformance_suite(
    name: str, options: dict[str, Any]
) -> None:
    spec = STRATEGIES[name]
    factory = functools.partial(build_strategy, name=name, hparams=HPARAMS, options=options)
    check_strategy(
        factory,
        min_sites=spec.min_updates(spec.resolve_options(options)),
        max_sites=spec.max_updates,
        max_examples=10,
    )


class FirstArrivalWins:
    """A user's strategy that takes the first update it is handed: depends on site order."""

    @property
    def name(self) -> str:
        return "first_arrival_wins"

    def init(self, params: Params) -> Params:
        return copy_params(params)

    def configure(
        self, rnd: int, state: Params, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        return {s: TrainInstruction(rnd=rnd, params=state, hparams={}) for s in sorted(sites)}

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        for u in updates:
            check_same_schema(expected=state, actual=u.params, where=f"site '{u.site}'")
        first = updates[0]
        new = copy_params(first.params)
        if first.kind == "delta":
            new = {k: (state[k] + v).astype(state[k].dtype) for k, v in new.items()}
        return new, new

    def state_to_record(self, state: Params) -> StateRecord:
        return StateRecord(tensors=state)

    def state_from_record(self, record: StateRecord) -> Params:
        return copy_params(record.tensors)


def test_a_strategy_that_depends_on_site_order_fails_the_suite() -> None:
    with pytest.raises(AssertionError, match=r"check_strategy\[order\].*depend on the order"):
        check_strategy(FirstArrivalWins, max_examples=20)
