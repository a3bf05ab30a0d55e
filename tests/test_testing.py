"""The conformance suite itself: a correct user strategy passes; each kind of bug is caught."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from flmi.core.messages import ClientUpdate, TrainInstruction, UpdateKind
from flmi.core.params import Params, check_same_schema, copy_params
from flmi.core.strategy import Capabilities, StateRecord
from flmi.strategies.base import ServerState
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fedopt import FedAvgM, MomentumOptions, MomentumState
from flmi.strategies.wrapper import StrategyWrapper
from flmi.testing import check_strategy

# The factories below are top-level classes of an importable module, as the resume
# check (run in a spawned process) requires.


class PlainMean:
    """A user's own strategy, written from scratch: the example-weighted mean."""

    @property
    def name(self) -> str:
        return "plain_mean"

    def init(self, params: Params) -> Params:
        return copy_params(params)

    def configure(
        self, rnd: int, state: Params, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        return {s: TrainInstruction(rnd=rnd, params=state, hparams={}) for s in sorted(sites)}

    def weight(self, update: ClientUpdate) -> float:
        return float(update.num_examples)

    def combine(self, state: Params, updates: Sequence[ClientUpdate]) -> Params:
        ordered = sorted(updates, key=lambda u: u.site)
        for u in ordered:
            check_same_schema(expected=state, actual=u.params, where=f"site '{u.site}'")
        total = sum(self.weight(u) for u in ordered)
        out: Params = {}
        for name in sorted(state):
            acc = np.zeros(state[name].shape)
            for u in ordered:
                acc += (self.weight(u) / total) * u.params[name].astype(np.float64)
            if ordered[0].kind is UpdateKind.DELTA:
                acc += state[name]
            out[name] = acc.astype(state[name].dtype)
        return out

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        new = self.combine(state, updates)
        return new, new

    def state_to_record(self, state: Params) -> StateRecord:
        return StateRecord(tensors=state)

    def state_from_record(self, record: StateRecord) -> Params:
        return copy_params(record.tensors)


class CountsPlusOne(PlainMean):
    """Weights n + 1: scaling every count changes the result."""

    def weight(self, update: ClientUpdate) -> float:
        return float(update.num_examples + 1)


class HalfStepWithoutHook(PlainMean):
    """Moves halfway to the mean, a server step, but does not expose aggregate_updates."""

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        mean = self.combine(state, updates)
        new = {k: (0.5 * (state[k] + mean[k])).astype(state[k].dtype) for k in state}
        return new, new


class VagueErrors(PlainMean):
    """Refuses a bad update with a message that does not say which tensor is wrong."""

    def combine(self, state: Params, updates: Sequence[ClientUpdate]) -> Params:
        try:
            return super().combine(state, updates)
        except Exception:
            raise ValueError("bad update") from None


class KeepsCountInSelf(PlainMean):
    """Hidden state: each call steps less far, counting calls in ``self``."""

    def __init__(self) -> None:
        self.calls = 0

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        self.calls += 1
        mean = self.combine(state, updates)
        lr = 1.0 / self.calls
        new = {k: (state[k] + lr * (mean[k] - state[k])).astype(state[k].dtype) for k in state}
        return new, new


class ForgetsVelocity(FedAvgM):
    """Server momentum whose checkpoint drops the velocity: resuming restarts it at 0."""

    def __init__(self) -> None:
        super().__init__(hparams={}, options=MomentumOptions(server_lr=1.0, server_momentum=0.9))

    def state_to_record(self, state: ServerState[MomentumState]) -> StateRecord:
        record = super().state_to_record(state)
        kept = {k: v for k, v in record.tensors.items() if k.startswith("params/")}
        return StateRecord(tensors=kept, meta=record.meta)

    def state_from_record(self, record: StateRecord) -> ServerState[MomentumState]:
        params = {k.partition("/")[2]: np.array(v) for k, v in record.tensors.items()}
        zero = {k: np.zeros(v.shape) for k, v in params.items()}
        return ServerState(params=params, rule=MomentumState(velocity=zero))


class Crashes(PlainMean):
    """Fails on every round."""

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        raise KeyError("oops")


def test_a_correct_user_strategy_passes_every_check_including_resume() -> None:
    check_strategy(PlainMean, max_examples=15)


def test_fedavg_passes_with_the_default_settings() -> None:
    check_strategy(lambda: FedAvg(hparams={}), check_resume=False)


@pytest.mark.parametrize(
    ("factory", "check", "detail"),
    [
        (CountsPlusOne, "scale", "example counts times"),
        (HalfStepWithoutHook, "identity", "should implement aggregate_updates"),
        (VagueErrors, "schema", "does not name the tensor"),
        (KeepsCountInSelf, "determinism", "never in self"),
        (ForgetsVelocity, "resume", "differs from 4 rounds straight"),
        (Crashes, "order", "aggregate raised KeyError"),
    ],
)
def test_each_kind_of_bug_fails_the_check_that_targets_it(
    factory: Any, check: str, detail: str
) -> None:
    with pytest.raises(AssertionError, match=rf"check_strategy\[{check}\].*{detail}"):
        check_strategy(factory, max_examples=15)


def test_a_lambda_factory_is_refused_by_the_resume_check_with_the_reason() -> None:
    with pytest.raises(AssertionError, match=r"check_strategy\[resume\].*top-level function"):
        check_strategy(lambda: PlainMean(), max_examples=3)


def test_a_factory_that_fails_is_reported() -> None:
    def broken() -> PlainMean:
        raise RuntimeError("no")

    with pytest.raises(AssertionError, match=r"check_strategy\[name\]: the factory raised"):
        check_strategy(broken)


def test_min_sites_above_max_sites_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="min_sites"):
        check_strategy(PlainMean, min_sites=5, max_sites=3)


class MutatesState(PlainMean):
    """Writes the new weights into the old state's arrays."""

    def aggregate(
        self, rnd: int, state: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Params]:
        new = self.combine(state, updates)
        for k in state:
            state[k][...] = new[k]
        return state, state


def test_a_strategy_that_changes_its_input_state_in_place_fails() -> None:
    with pytest.raises(
        AssertionError, match=r"check_strategy\[order\]: aggregate changed the state"
    ):
        check_strategy(MutatesState, max_examples=15)


class PersonalMean(PlainMean):
    """A user's personalised strategy: each site is scored with the mean plus its own offset."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            personalised=True,
            site_params=self.site_params,
            evaluation_hparams={"finetune_epochs": 2},
        )

    def site_params(self, state: Params, site: str) -> Params:
        offset = float(sum(map(ord, site)) % 7)
        return {k: (v + offset).astype(v.dtype) for k, v in state.items()}


class UndeclaredPersonalised(PlainMean):
    """Says it is personalised the way nothing reads: a property, not a declared capability."""

    @property
    def personalised(self) -> bool:
        return True


def test_a_personalised_user_strategy_keeps_its_capabilities_under_every_layer() -> None:
    check_strategy(PersonalMean, max_examples=15, check_resume=False)


def test_a_capability_offered_but_not_declared_fails_the_wrapped_check() -> None:
    with pytest.raises(
        AssertionError, match=r"check_strategy\[wrapped\]: the strategy has 'personalised'"
    ):
        check_strategy(UndeclaredPersonalised, max_examples=5, check_resume=False)


def test_a_layer_that_hid_the_capabilities_would_fail_the_wrapped_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What StrategyWrapper did before it passed capabilities on.
    monkeypatch.setattr(StrategyWrapper, "capabilities", property(lambda self: Capabilities()))
    with pytest.raises(
        AssertionError,
        match=r"check_strategy\[wrapped\]: under per-site settings, the wrapped strategy's "
        r"capabilities are \[\], expected \['evaluation_hparams', 'personalised', 'site_params'\]",
    ):
        check_strategy(PersonalMean, max_examples=5, check_resume=False)
