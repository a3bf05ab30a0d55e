"""The federation loop with a fake numpy runtime: no torch, no files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from flmi.core.errors import ConfigError, RoundFailedError
from flmi.core.federation import (
    FederationPlan,
    RoundRecord,
    run_federation,
    sample_sites,
    split_replies,
)
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.strategies.fedavg import FedAvg


class AddOneRuntime:
    """Each site returns the global weights plus its index + 1; chosen sites misbehave."""

    def __init__(
        self, names: Sequence[str], *, nan_sites: Sequence[str] = (), failing: Sequence[str] = ()
    ):
        self.names = sorted(names)
        self.nan_sites, self.failing = set(nan_sites), set(failing)
        self.trained: list[list[str]] = []

    def site_names(self) -> Sequence[str]:
        return self.names

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        self.trained.append(sorted(instructions))
        out: dict[str, TrainReply] = {}
        for site, ins in instructions.items():
            if site in self.failing:
                out[site] = ClientError(site=site, code=ErrorCode.TRAINING_FAILED, message="boom")
                continue
            value = ins.params["w"] + self.names.index(site) + 1
            if site in self.nan_sites:
                value = value * np.nan
            out[site] = ClientUpdate(
                site=site,
                params={"w": value},
                kind=UpdateKind.FULL,
                num_examples=10,
                num_steps=1,
                metrics={},
            )
        return out

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        return {
            s: EvaluateResult(
                site=s,
                split=i.split,
                num_examples=1 + k,
                metrics={"score": float(i.params["w"][0])},
            )
            for k, (s, i) in enumerate(sorted(instructions.items()))
        }


class Keep:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []
        self.params: list[Params] = []

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        self.records.append(record)
        self.params.append(params)


def _run(runtime: AddOneRuntime, plan: FederationPlan) -> Keep:
    keep = Keep()
    run_federation(
        strategy=FedAvg(hparams={"lr": 0.1, "batch_size": 4}),
        runtime=runtime,
        initial_params={"w": np.zeros(1)},
        plan=plan,
        observer=keep,
        evaluate_central=lambda p: {"score": float(p["w"][0])},
    )
    return keep


def test_every_round_aggregates_and_is_recorded_once() -> None:
    keep = _run(
        AddOneRuntime(["a", "b"]), FederationPlan(rounds=3, fraction=1.0, min_sites=1, seed=0)
    )
    assert [r.rnd for r in keep.records] == [1, 2, 3]
    # mean of +1 and +2 is +1.5 per round
    np.testing.assert_allclose([p["w"][0] for p in keep.params], [1.5, 3.0, 4.5])
    assert keep.records[-1].global_metrics == {"score": 4.5}
    assert keep.records[0].bytes_down == 2 * 8 and keep.records[0].bytes_up == 2 * 8


def test_nan_update_is_rejected_by_the_server_and_never_aggregated() -> None:
    runtime = AddOneRuntime(["a", "b", "c"], nan_sites=["b"])
    keep = _run(runtime, FederationPlan(rounds=1, fraction=1.0, min_sites=1, seed=0))
    np.testing.assert_allclose(keep.params[0]["w"], [(1 + 3) / 2])
    assert keep.records[0].sites_failed == {"b": ErrorCode.REJECTED_BY_SERVER.value}


def test_site_error_is_kept_apart_and_the_round_completes() -> None:
    keep = _run(
        AddOneRuntime(["a", "b"], failing=["a"]),
        FederationPlan(rounds=1, fraction=1.0, min_sites=1, seed=0),
    )
    np.testing.assert_allclose(keep.params[0]["w"], [2.0])
    assert keep.records[0].sites_failed == {"a": "training_failed"}


def test_too_few_valid_updates_leave_the_model_unchanged_when_such_rounds_are_allowed() -> None:
    runtime = AddOneRuntime(["a", "b"], failing=["a"])
    plan = FederationPlan(rounds=1, fraction=1.0, min_sites=2, seed=0, max_failed_rounds=2)
    keep = _run(runtime, plan)
    np.testing.assert_array_equal(keep.params[0]["w"], [0.0])
    assert keep.records[0].sites_failed == {"a": "training_failed"}


def test_a_round_that_aggregates_nothing_stops_the_run_naming_each_sites_reason() -> None:
    runtime = AddOneRuntime(["a", "b", "c"], nan_sites=["a", "c"], failing=["b"])
    keep = Keep()
    with pytest.raises(RoundFailedError) as caught:
        run_federation(
            strategy=FedAvg(hparams={"lr": 0.1}),
            runtime=runtime,
            initial_params={"w": np.zeros(1)},
            plan=FederationPlan(rounds=3, fraction=1.0, min_sites=1, seed=0),
            observer=keep,
        )
    message = str(caught.value)
    assert message.startswith("round 1: 0 of 3 sampled sites gave a valid update")
    assert "site 'a': rejected_by_server: update from site 'a'" in message
    assert "site 'b': training_failed: boom" in message
    assert "site 'c': rejected_by_server" in message
    assert "federation.max_failed_rounds = 1" in message
    # The stopping round is recorded (with why), and nothing after it ran.
    assert [r.rnd for r in keep.records] == [1] and runtime.trained == [["a", "b", "c"]]
    assert keep.records[0].sites_failed == {
        "a": "rejected_by_server",
        "b": "training_failed",
        "c": "rejected_by_server",
    }


def test_max_failed_rounds_counts_every_round_that_aggregated_nothing() -> None:
    # Site b fails every round and min_sites is 2: rounds 1 and 2 are allowed, 3 stops.
    runtime = AddOneRuntime(["a", "b"], failing=["b"])
    keep = Keep()
    plan = FederationPlan(rounds=5, fraction=1.0, min_sites=2, seed=0, max_failed_rounds=3)
    with pytest.raises(RoundFailedError, match=r"^round 3: 1 of 2 sampled .* 3 rounds aggregated"):
        run_federation(
            strategy=FedAvg(hparams={"lr": 0.1}),
            runtime=runtime,
            initial_params={"w": np.zeros(1)},
            plan=plan,
            observer=keep,
        )
    assert [r.rnd for r in keep.records] == [1, 2, 3]
    assert all(p["w"][0] == 0.0 for p in keep.params)


def test_site_mean_is_weighted_by_test_examples() -> None:
    keep = _run(
        AddOneRuntime(["a", "b"]), FederationPlan(rounds=1, fraction=1.0, min_sites=1, seed=0)
    )
    record = keep.records[0]
    assert set(record.per_site) == {"a", "b"}
    assert record.site_mean["score"] == pytest.approx(1.5)


def test_sampling_is_seeded_sorted_and_respects_min_sites() -> None:
    names = [f"s{i}" for i in range(10)]
    first = sample_sites(sites=names, fraction=0.3, min_sites=2, seed=5, rnd=1)
    assert first == sample_sites(
        sites=list(reversed(names)), fraction=0.3, min_sites=2, seed=5, rnd=1
    )
    assert first == sorted(first) and len(first) == 3
    assert len(sample_sites(sites=names, fraction=0.1, min_sites=4, seed=5, rnd=1)) == 4
    rounds = {
        tuple(sample_sites(sites=names, fraction=0.3, min_sites=1, seed=5, rnd=r))
        for r in range(1, 20)
    }
    assert len(rounds) > 1


def test_min_sites_above_the_number_of_sites_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="min_sites"):
        sample_sites(sites=["a"], fraction=1.0, min_sites=2, seed=0, rnd=1)


def test_split_replies_rejects_an_update_with_the_wrong_shape() -> None:
    bad = ClientUpdate(
        site="a",
        params={"w": np.zeros(2)},
        kind=UpdateKind.FULL,
        num_examples=1,
        num_steps=1,
        metrics={},
    )
    updates, errors = split_replies({"a": bad}, {"w": np.zeros(1)})
    assert updates == [] and "'w' has shape" in errors["a"].message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rounds", 0),
        ("fraction", 0.0),
        ("fraction", 1.5),
        ("min_sites", 0),
        ("eval_every", 0),
        ("max_failed_rounds", 0),
    ],
)
def test_plan_refuses_values_out_of_range(field: str, value: float) -> None:
    kwargs = {"rounds": 1, "fraction": 1.0, "min_sites": 1, "seed": 0, field: value}
    with pytest.raises(ConfigError, match=field):
        FederationPlan(**kwargs)  # type: ignore[arg-type]


def test_resuming_after_round_2_gives_the_same_rounds_3_and_4_as_running_straight() -> None:
    from flmi.core.federation import ResumePoint

    plan = FederationPlan(rounds=4, fraction=0.5, min_sites=1, seed=3)
    straight = _run(AddOneRuntime(["a", "b", "c", "d"]), plan)
    resumed = Keep()
    strategy = FedAvg(hparams={"lr": 0.1, "batch_size": 4})
    run_federation(
        strategy=strategy,
        runtime=AddOneRuntime(["a", "b", "c", "d"]),
        initial_params={"w": np.zeros(1)},
        plan=plan,
        observer=resumed,
        evaluate_central=lambda p: {"score": float(p["w"][0])},
        resume=ResumePoint(
            completed_round=2,
            params=straight.params[1],
            state=strategy.state_to_record(strategy.init(straight.params[1])),
        ),
    )
    assert [r.rnd for r in resumed.records] == [3, 4]
    for a, b in zip(straight.records[2:], resumed.records, strict=True):
        assert a.sites_sampled == b.sites_sampled
    np.testing.assert_array_equal(resumed.params[-1]["w"], straight.params[-1]["w"])
