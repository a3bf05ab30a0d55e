"""Homomorphic aggregation: the server adds CKKS ciphertexts under a public context only."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from flmi.core.messages import ErrorCode
from flmi.privacy.he import CkksSettings, HEServer, Stage, public_context
from flmi.privacy.linear import LinearRule
from flmi.privacy.site import SecureSite
from flmi.privacy.wire import Payload, ProtocolError
from flmi.runtime.inprocess import InProcessRuntime
from tests.privacy.fakes import DropAt, Recorder, fixed_sites, plain_mean, train_all


def _server(holder: str = "site_0") -> HEServer:
    return HEServer(key_holder=holder, rule=LinearRule.WEIGHTED_MEAN, settings=CkksSettings())


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_he_aggregate_matches_plain_mean_to_relative_l2_1e_6_over_two_rounds() -> None:
    sites, reference = fixed_sites(count=4, size=5000, seed=0)
    secure = [SecureSite(site=s) for s in sites]
    runtime = InProcessRuntime(sites=secure)
    server = _server()

    outcomes = [
        server.aggregate(
            rnd=rnd,
            exchange=runtime,
            replies=train_all(runtime, reference, rnd),
            reference=reference,
        )
        for rnd in (1, 2)
    ]

    expected = plain_mean(sites, reference, {s.name for s in sites})
    for outcome in outcomes:
        assert outcome.update is not None and outcome.contributors == 4 and not outcome.errors
        assert outcome.update.num_examples == sum(s.n for s in sites)
        for name, value in outcome.update.params.items():
            assert _relative_l2(value.astype(np.float64), expected[name]) < 1e-6
    # Keys are made once: the second round moves ciphertexts only, far fewer bytes down.
    assert outcomes[0].bytes_down > outcomes[1].bytes_down > 0
    assert all(site.has_secret_key for site in secure)


def test_every_context_the_server_holds_has_no_secret_key() -> None:
    sites, reference = fixed_sites(count=3, size=100, seed=1)
    recorder = Recorder(InProcessRuntime(sites=[SecureSite(site=s) for s in sites]))
    server = _server("site_1")

    outcome = server.aggregate(
        rnd=1,
        exchange=recorder,
        replies=train_all(recorder._runtime, reference, 1),
        reference=reference,
    )

    assert outcome.update is not None
    assert server.contexts, "the server loaded the public context"
    for context in server.contexts:
        assert not context.is_private() and not context.has_secret_key()
    # The secret context travels sealed: nothing the server received loads as a context
    # that can decrypt.
    for stage, _, data in recorder.received:
        if stage == Stage.KEYGEN:
            payload = Payload.decode(data, where="test")
            for name, blob in payload.blobs.items():
                if name.startswith("to/"):
                    with pytest.raises(Exception):  # noqa: B017 - TenSEAL raises plain errors
                        ts.context_from(blob)


def test_the_server_receives_no_site_update_in_the_clear() -> None:
    sites, reference = fixed_sites(count=3, size=2000, seed=6)
    recorder = Recorder(InProcessRuntime(sites=[SecureSite(site=s) for s in sites]))

    outcome = _server().aggregate(
        rnd=1,
        exchange=recorder,
        replies=train_all(recorder._runtime, reference, 1),
        reference=reference,
    )

    assert outcome.update is not None
    received = b"".join(data for _, _, data in recorder.received)
    for site in sites:
        n_delta = site.n * site.delta["a.weight"].astype(np.float64)
        assert n_delta.astype("<f8").tobytes()[:128] not in received
        assert site.delta["a.weight"].astype("<f4").tobytes()[:128] not in received
    decrypted = [
        Payload.decode(data, where="test")
        for stage, _, data in recorder.received
        if stage == Stage.DECRYPT
    ]
    assert len(decrypted) == 1  # one plaintext comes back: the sum


def test_a_context_with_a_secret_key_is_refused_by_the_server() -> None:
    context = CkksSettings().make_context()

    with pytest.raises(ProtocolError, match="holds a secret key"):
        public_context(context.serialize(save_secret_key=True), where="test")


def test_he_bytes_are_counted_and_many_times_the_float32_update() -> None:
    sites, reference = fixed_sites(count=2, size=20_000, seed=2)
    runtime = InProcessRuntime(sites=[SecureSite(site=s) for s in sites])
    server = _server()
    server.aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    outcome = server.aggregate(
        rnd=2, exchange=runtime, replies=train_all(runtime, reference, 2), reference=reference
    )

    plain_up = 2 * sum(v.nbytes for v in reference.values())
    assert outcome.bytes_up > 5 * plain_up


def test_a_site_that_drops_before_encrypting_is_left_out_of_the_sum() -> None:
    sites, reference = fixed_sites(count=4, size=300, seed=3)
    endpoints = [SecureSite(site=s) for s in sites]
    dropping = DropAt(site=endpoints[2], stage=Stage.ENCRYPT)
    runtime = InProcessRuntime(sites=[endpoints[0], endpoints[1], dropping, endpoints[3]])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is not None and outcome.contributors == 3
    assert outcome.errors["site_2"].code == ErrorCode.TIMEOUT
    expected = plain_mean(sites, reference, {"site_0", "site_1", "site_3"})
    for name, value in outcome.update.params.items():
        assert _relative_l2(value.astype(np.float64), expected[name]) < 1e-6


def test_a_site_refuses_to_decrypt_a_single_update() -> None:
    sites, reference = fixed_sites(count=2, size=10, seed=4)
    site = SecureSite(site=sites[0])
    runtime = InProcessRuntime(sites=[site, SecureSite(site=sites[1])])
    _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    reply = site.exchange(
        stage=Stage.DECRYPT,
        rnd=2,
        payload=Payload(header={"round": 2, "contributors": 1, "size": 3}).encode(),
    )

    assert not isinstance(reply, bytes) and reply.code == ErrorCode.PROTOCOL_ERROR
    assert "would reveal a site's own" in reply.message


def test_the_round_is_refused_when_the_key_holder_is_unavailable() -> None:
    sites, reference = fixed_sites(count=3, size=10, seed=5)
    endpoints = [SecureSite(site=s) for s in sites]
    runtime = InProcessRuntime(sites=[DropAt(site=endpoints[0], stage=Stage.HELLO), *endpoints[1:]])

    outcome = _server("site_0").aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is None and outcome.contributors == 0


def test_ckks_settings_name_the_config_key_when_out_of_range() -> None:
    with pytest.raises(ValueError, match="privacy.he_poly_modulus_degree"):
        CkksSettings(poly_modulus_degree=4096)
    with pytest.raises(ValueError, match="privacy.he_scale_bits"):
        CkksSettings(scale_bits=60)


def test_a_key_holder_that_restarts_and_loses_its_context_has_every_site_rekeyed() -> None:
    sites, reference = fixed_sites(count=3, size=200, seed=6)
    server = _server("site_0")
    endpoints = [SecureSite(site=s) for s in sites]
    before = InProcessRuntime(sites=endpoints)
    server.aggregate(
        rnd=1, exchange=before, replies=train_all(before, reference, 1), reference=reference
    )
    restarted = SecureSite(site=sites[0])  # the key holder's new process: no context
    after = InProcessRuntime(sites=[restarted, *endpoints[1:]])

    lost = server.aggregate(
        rnd=2, exchange=after, replies=train_all(after, reference, 2), reference=reference
    )
    rekeyed = server.aggregate(
        rnd=3, exchange=after, replies=train_all(after, reference, 3), reference=reference
    )

    assert lost.contributors == 2 and lost.errors["site_0"].code == ErrorCode.PROTOCOL_ERROR
    assert rekeyed.update is not None and rekeyed.contributors == 3 and not rekeyed.errors
    expected = plain_mean(sites, reference, {s.name for s in sites})
    for name, value in rekeyed.update.params.items():
        assert _relative_l2(value.astype(np.float64), expected[name]) < 1e-6
    assert restarted.has_secret_key
