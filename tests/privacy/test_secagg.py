"""Secure aggregation: the sum is exact up to quantisation, survives dropouts, hides each site."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainInstruction
from flmi.core.params import Params
from flmi.privacy.linear import LinearRule, linear_terms
from flmi.privacy.secagg import (
    FixedPoint,
    SecAggRound,
    SecAggServer,
    Stage,
    drive,
    quantised_vector,
)
from flmi.privacy.site import SecureSite
from flmi.privacy.wire import Payload
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from tests.privacy.fakes import DropAt, FixedSite, Recorder, fixed_sites, plain_mean, train_all

FIXED = FixedPoint(clip=1.0, bits=32)


def _server(threshold: int = 0) -> SecAggServer:
    return SecAggServer(threshold=threshold, fixed=FIXED, rule=LinearRule.WEIGHTED_MEAN)


def test_unmasked_sum_equals_plain_weighted_mean_within_quantisation_error() -> None:
    sites, reference = fixed_sites(count=5, size=2000, seed=0)
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is not None and outcome.contributors == 5 and not outcome.errors
    expected = plain_mean(sites, reference, {s.name for s in sites})
    for name, value in outcome.update.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)
    assert outcome.update.num_examples == sum(s.n for s in sites)
    assert outcome.bytes_up > 8 * 2006 * 5 and outcome.bytes_down > 0


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    count=st.integers(2, 5),
    bits=st.integers(12, 40),
)
def test_property_sum_within_half_a_step_per_value(seed: int, count: int, bits: int) -> None:
    sites, reference = fixed_sites(count=count, size=50, seed=seed, scale=0.9)
    fixed = FixedPoint(clip=1.0, bits=bits)
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])
    server = SecAggServer(threshold=0, fixed=fixed, rule=LinearRule.WEIGHTED_MEAN)

    outcome = server.aggregate(
        rnd=3, exchange=runtime, replies=train_all(runtime, reference, 3), reference=reference
    )

    assert outcome.update is not None
    expected = plain_mean(sites, reference, {s.name for s in sites})
    for name, value in outcome.update.params.items():
        assert np.max(np.abs(value - expected[name])) <= fixed.step / 2 + 1e-6


def _dropping_runtime(
    sites_count: int, drop: dict[int, Stage], seed: int = 1
) -> tuple[InProcessRuntime, list[FixedSite], Params, dict[str, DropAt]]:
    sites, reference = fixed_sites(count=sites_count, size=300, seed=seed)
    endpoints: list[SiteEndpoint] = []
    droppers: dict[str, DropAt] = {}
    for i, site in enumerate(sites):
        secure = SecureSite(site=site)
        if i in drop:
            droppers[site.name] = DropAt(site=secure, stage=drop[i])
            endpoints.append(droppers[site.name])
        else:
            endpoints.append(secure)
    return InProcessRuntime(sites=endpoints), sites, reference, droppers


@pytest.mark.parametrize("dropped", [1, 2])
def test_sum_recovered_when_up_to_n_minus_t_sites_drop_after_sharing_keys(dropped: int) -> None:
    # 5 sites, threshold 3: sites that shared their keys but never sent a masked
    # input leave pairwise masks in the others' inputs; their shares remove them.
    runtime, sites, reference, _ = _dropping_runtime(5, {i: Stage.MASKED for i in range(dropped)})

    outcome = _server(threshold=3).aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    survivors = {s.name for s in sites[dropped:]}
    assert outcome.update is not None and outcome.contributors == 5 - dropped
    assert sorted(outcome.errors) == sorted(s.name for s in sites[:dropped])
    expected = plain_mean(sites, reference, survivors)
    for name, value in outcome.update.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)


def test_sum_recovered_when_sites_drop_after_sending_their_masked_input() -> None:
    runtime, sites, reference, _ = _dropping_runtime(5, {0: Stage.UNMASK, 3: Stage.UNMASK})

    outcome = _server(threshold=3).aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is not None and outcome.contributors == 5
    expected = plain_mean(sites, reference, {s.name for s in sites})
    for name, value in outcome.update.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", [Stage.MASKED, Stage.UNMASK])
def test_recovery_refused_with_fewer_than_threshold_survivors(stage: Stage) -> None:
    runtime, _, reference, _ = _dropping_runtime(5, {0: stage, 1: stage, 2: stage})

    outcome = _server(threshold=3).aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is None and outcome.contributors == 0
    assert {"site_0", "site_1", "site_2"} <= set(outcome.errors)


def test_a_dropped_sites_late_masked_input_is_ignored() -> None:
    runtime, sites, reference, droppers = _dropping_runtime(4, {3: Stage.MASKED})
    replies = train_all(runtime, reference, 1)
    state = SecAggRound(
        rnd=1,
        roster=sorted(replies),
        threshold=3,
        fixed=FIXED,
        rule=LinearRule.WEIGHTED_MEAN,
    )

    drive(state, runtime)
    late = droppers["site_3"].late
    accepted = state.receive("site_3", Stage.MASKED, 1, late or b"")
    update, count = state.result(reference)

    assert late is not None and not accepted
    assert update is not None and count == 3
    expected = plain_mean(sites, reference, {"site_0", "site_1", "site_2"})
    for name, value in update.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)


def test_a_round_with_fewer_sites_than_the_threshold_runs_no_stage() -> None:
    runtime, _, reference, _ = _dropping_runtime(3, {})
    recorder = Recorder(runtime)

    outcome = _server(threshold=4).aggregate(
        rnd=1, exchange=recorder, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is None and outcome.contributors == 0
    assert recorder.received == [] and outcome.bytes_down == 0


def test_a_reply_of_another_round_is_ignored() -> None:
    state = SecAggRound(
        rnd=2, roster=["a", "b"], threshold=2, fixed=FIXED, rule=LinearRule.WEIGHTED_MEAN
    )
    state.requests(Stage.ADVERTISE)

    assert not state.receive("a", Stage.ADVERTISE, 1, b"anything")
    assert not state.receive("c", Stage.ADVERTISE, 2, b"anything")
    assert state.receive("a", Stage.ADVERTISE, 2, b"garbage")  # taken, and refused as malformed
    assert state.errors["a"].code == ErrorCode.PROTOCOL_ERROR


def _masked_inputs(recorder: Recorder) -> dict[str, np.ndarray]:
    return {
        site: np.frombuffer(Payload.decode(data, where="test").blobs["y"], dtype="<u8")
        for stage, site, data in recorder.received
        if stage == Stage.MASKED
    }


def test_masks_change_every_round_while_the_sum_does_not() -> None:
    sites, reference = fixed_sites(count=3, size=500, seed=2)
    recorder = Recorder(InProcessRuntime(sites=[SecureSite(site=s) for s in sites]))
    runtime = recorder._runtime
    results = []
    masked = []
    for rnd in (1, 2):
        recorder.received.clear()
        outcome = _server().aggregate(
            rnd=rnd,
            exchange=recorder,
            replies=train_all(runtime, reference, rnd),
            reference=reference,
        )
        assert outcome.update is not None
        results.append(outcome.update.params)
        masked.append(_masked_inputs(recorder))

    for site in masked[0]:
        assert np.mean(masked[0][site] == masked[1][site]) < 0.01
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])


def test_a_single_masked_update_passes_uniformity_tests_its_plain_input_fails() -> None:
    sites, reference = fixed_sites(count=3, size=40_000, seed=3)
    recorder = Recorder(InProcessRuntime(sites=[SecureSite(site=s) for s in sites]))
    _server().aggregate(
        rnd=1,
        exchange=recorder,
        replies=train_all(recorder._runtime, reference, 1),
        reference=reference,
    )
    masked = _masked_inputs(recorder)["site_0"]
    plain = quantised_vector(
        linear_terms(
            sites[0].train(_instruction(reference)),  # what site_0 holds back
            reference=reference,
            rule=LinearRule.WEIGHTED_MEAN,
        ),
        FIXED,
    )

    def byte_p(values: np.ndarray) -> float:
        counts = np.bincount(values.astype("<u8").view(np.uint8), minlength=256)
        return float(stats.chisquare(counts).pvalue)

    def ks_p(values: np.ndarray) -> float:
        return float(stats.kstest(values.astype(np.float64) / 2.0**64, "uniform").pvalue)

    assert byte_p(masked) > 1e-4 and ks_p(masked) > 1e-4
    assert byte_p(plain) < 1e-10 and ks_p(plain) < 1e-10


def _instruction(reference: Params) -> TrainInstruction:
    return TrainInstruction(rnd=1, params=reference, hparams={})


def test_the_server_never_receives_an_unmasked_update_nor_both_shares_of_a_site() -> None:
    runtime, sites, reference, _ = _dropping_runtime(5, {4: Stage.MASKED})
    recorder = Recorder(runtime)

    replies = train_all(runtime, reference, 1)
    outcome = _server(threshold=3).aggregate(
        rnd=1, exchange=recorder, replies=replies, reference=reference
    )

    assert outcome.update is not None
    for reply in replies.values():  # training replies carry metrics only
        assert isinstance(reply, ClientUpdate) and not reply.params and not reply.extras
    received = b"".join(data for _, _, data in recorder.received)
    for site in sites:
        update = site.train(_instruction(reference))
        plain = quantised_vector(
            linear_terms(update, reference=reference, rule=LinearRule.WEIGHTED_MEAN), FIXED
        )
        assert plain[:64].astype("<u8").tobytes() not in received
        for tensor in update.params.values():
            assert tensor.astype("<f4").tobytes()[:256] not in received
        delta = site.delta["a.weight"].astype("<f4").tobytes()[:256]
        assert delta not in received
    masked = _masked_inputs(recorder)
    assert set(masked) == {"site_0", "site_1", "site_2", "site_3"}
    unmask = [
        Payload.decode(data, where="test").header
        for stage, _, data in recorder.received
        if stage == Stage.UNMASK
    ]
    for header in unmask:
        assert not set(header["b"]) & set(header["s"])
        assert set(header["s"]) == {"site_4"}
    for stage, _, data in recorder.received:
        if stage == Stage.SHARE:  # shares travel sealed: no readable share in them
            assert b'"b"' not in data and b'"s"' not in data


def test_a_site_refuses_an_update_outside_the_clip_range_and_the_rest_aggregate() -> None:
    sites, reference = fixed_sites(count=4, size=100, seed=4)
    sites[1].delta["a.weight"][7] = 3.5
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.errors["site_1"].code == ErrorCode.UPDATE_OUT_OF_RANGE
    assert "privacy.secagg_clip" in outcome.errors["site_1"].message
    assert outcome.update is not None and outcome.contributors == 3


def test_a_site_refuses_a_non_finite_update() -> None:
    sites, reference = fixed_sites(count=3, size=100, seed=5)
    sites[0].delta["b.bias"][0, 0] = np.nan
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.errors["site_0"].code == ErrorCode.NON_FINITE_UPDATE
    assert outcome.update is not None and outcome.contributors == 2


def test_a_site_refuses_a_threshold_of_half_the_roster_or_less() -> None:
    sites, reference = fixed_sites(count=4, size=10, seed=6)
    site = SecureSite(site=sites[0])
    train_all(InProcessRuntime(sites=[site]), reference, 1)
    request = Payload(
        header={
            "round": 1,
            "roster": [s.name for s in sites],
            "threshold": 2,
            "clip": 1.0,
            "bits": 32,
            "rule": "weighted_mean",
        }
    )

    reply = site.exchange(stage=Stage.ADVERTISE, rnd=1, payload=request.encode())

    assert isinstance(reply, ClientError) and reply.code == ErrorCode.PROTOCOL_ERROR
    assert "threshold 2 must exceed half the roster of 4" in reply.message


def test_a_site_answers_garbage_and_stages_of_other_rounds_with_an_error() -> None:
    sites, reference = fixed_sites(count=2, size=10, seed=7)
    site = SecureSite(site=sites[0])
    train_all(InProcessRuntime(sites=[site]), reference, 1)

    garbage = site.exchange(stage=Stage.ADVERTISE, rnd=1, payload=b"\x00\x00\x00\x05{bad}")
    other = site.exchange(
        stage=Stage.ADVERTISE, rnd=1, payload=Payload(header={"round": 9}).encode()
    )
    early = site.exchange(stage=Stage.UNMASK, rnd=1, payload=Payload(header={"round": 1}).encode())

    for reply in (garbage, other, early):
        assert isinstance(reply, ClientError) and reply.code == ErrorCode.PROTOCOL_ERROR


def test_fednova_rule_masks_step_normalised_changes() -> None:
    sites, reference = fixed_sites(count=3, size=40, seed=8)
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])
    server = SecAggServer(threshold=0, fixed=FIXED, rule=LinearRule.STEP_NORMALISED)

    outcome = server.aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    total = sum(s.n for s in sites)
    tau_eff = sum(s.n * s.steps for s in sites) / total
    assert outcome.update is not None and outcome.update.num_steps == 1
    for name, value in outcome.update.params.items():
        expected = (
            tau_eff
            * sum(
                s.n
                * ((reference[name] + s.delta[name]).astype(np.float64) - reference[name])
                / s.steps
                for s in sites
            )
            / total
        )
        np.testing.assert_allclose(value, expected, rtol=0, atol=1e-6)


def test_wire_header_is_json_and_blobs_round_trip() -> None:
    payload = Payload(header={"round": 1, "x": [1, 2]}, blobs={"k": b"\x01\x02", "a": b""})

    back = Payload.decode(payload.encode(), where="test")

    assert back.header == {"round": 1, "x": [1, 2]} and back.blobs == {"k": b"\x01\x02", "a": b""}
    encoded = payload.encode()
    size = int.from_bytes(encoded[:4], "big")
    assert json.loads(encoded[4 : 4 + size])["round"] == 1  # a JSON header, never a pickle
