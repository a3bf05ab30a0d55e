"""The federation loop drives a secure protocol through the runtime's staged exchanges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from flmi.core.errors import ConfigError, RoundFailedError
from flmi.core.federation import FederationPlan, RoundRecord, run_federation
from flmi.core.messages import (
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
)
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.privacy.linear import LinearRule
from flmi.privacy.secagg import FixedPoint, SecAggServer, Stage
from flmi.privacy.site import SecureSite
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.strategies.fedavg import FedAvg
from tests.privacy.fakes import DropAt, FixedSite, fixed_sites


class _Scored(FixedSite):
    """A fixed site that also answers evaluation (with nothing to score)."""

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        return EvaluateResult(site=self.name, split=instruction.split, num_examples=0, metrics={})


class _Keep:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        self.records.append(record)


class _NoStages:
    """A runtime that cannot carry protocol stages."""

    def __init__(self, runtime: InProcessRuntime) -> None:
        self._runtime = runtime

    def site_names(self) -> Sequence[str]:
        return self._runtime.site_names()

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        return self._runtime.train(instructions)

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        return self._runtime.evaluate(instructions)


def _scored_sites(count: int, seed: int) -> tuple[list[_Scored], Params]:
    sites, reference = fixed_sites(count=count, size=200, seed=seed, scale=0.1)
    return [_Scored(name=s.name, delta=s.delta, n=s.n, steps=s.steps) for s in sites], reference


def _run(
    endpoints: Sequence[SiteEndpoint],
    reference: Params,
    secure: SecAggServer | None,
    *,
    max_failed_rounds: int = 1,
    keep: _Keep | None = None,
) -> tuple[Params, list[RoundRecord]]:
    keep = keep if keep is not None else _Keep()
    plan = FederationPlan(
        rounds=3, fraction=1.0, min_sites=2, seed=0, max_failed_rounds=max_failed_rounds
    )
    result = run_federation(
        strategy=FedAvg(hparams={}),
        runtime=InProcessRuntime(sites=endpoints),
        initial_params=reference,
        plan=plan,
        observer=keep,
        secure=secure,
    )
    return result.params, keep.records


def _secagg(threshold: int = 0) -> SecAggServer:
    return SecAggServer(
        threshold=threshold, fixed=FixedPoint(clip=1.0, bits=32), rule=LinearRule.WEIGHTED_MEAN
    )


def test_three_secure_rounds_end_where_three_plain_rounds_do_and_count_protocol_bytes() -> None:
    sites, reference = _scored_sites(4, seed=0)

    plain, plain_records = _run(sites, reference, None)
    secure, secure_records = _run([SecureSite(site=s) for s in sites], reference, _secagg())

    for name in reference:
        np.testing.assert_allclose(secure[name], plain[name], rtol=0, atol=1e-6)
    for s, p in zip(secure_records, plain_records, strict=True):
        assert s.bytes_up > p.bytes_up > 0 and s.bytes_down > p.bytes_down
        assert s.sites_failed == {}


def _two_of_three_drop(seed: int) -> tuple[list[SiteEndpoint], Params]:
    sites, reference = _scored_sites(3, seed=seed)
    secure_sites: list[SiteEndpoint] = [SecureSite(site=s) for s in sites]
    secure_sites[0] = DropAt(site=SecureSite(site=sites[0]), stage=Stage.MASKED)
    secure_sites[1] = DropAt(site=SecureSite(site=sites[1]), stage=Stage.MASKED)
    return secure_sites, reference


def test_too_few_survivors_leave_the_model_unchanged_and_record_why() -> None:
    secure_sites, reference = _two_of_three_drop(seed=1)

    params, records = _run(secure_sites, reference, _secagg(threshold=2), max_failed_rounds=4)

    for name in reference:
        np.testing.assert_array_equal(params[name], reference[name])
    assert records[0].sites_failed == {"site_0": "timeout", "site_1": "timeout"}


def test_a_secure_round_with_too_few_survivors_stops_the_run_naming_why() -> None:
    secure_sites, reference = _two_of_three_drop(seed=1)
    keep = _Keep()

    with pytest.raises(RoundFailedError) as caught:
        _run(secure_sites, reference, _secagg(threshold=2), keep=keep)

    message = str(caught.value)
    assert message.startswith("round 1: 0 of 3 sampled sites gave a valid update")
    assert "the secure aggregation protocol recovered no aggregate" in message
    assert "site 'site_0': timeout" in message and "site 'site_1': timeout" in message
    assert "federation.max_failed_rounds = 1" in message
    assert [r.rnd for r in keep.records] == [1]


def test_a_runtime_without_stages_is_refused_before_round_1() -> None:
    sites, reference = _scored_sites(2, seed=2)
    runtime = _NoStages(InProcessRuntime(sites=[SecureSite(site=s) for s in sites]))

    with pytest.raises(ConfigError, match="privacy.aggregation = 'secagg' needs a runtime"):
        run_federation(
            strategy=FedAvg(hparams={}),
            runtime=runtime,
            initial_params=reference,
            plan=FederationPlan(rounds=1, fraction=1.0, min_sites=1, seed=0),
            observer=_Keep(),
            secure=_secagg(),
        )
