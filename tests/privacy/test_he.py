"""Homomorphic aggregation: the server adds CKKS ciphertexts under a public context only,
and only the key holder decrypts, only a sum that enough sites of the round signed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flmi.core.exchange import StageReply
from flmi.core.messages import ClientError, ErrorCode
from flmi.core.params import Params
from flmi.privacy.he import CkksSettings, HERound, HEServer, Stage, public_context
from flmi.privacy.he_sums import Entry, SignedSum, digest, entries_to_wire, part_prefix
from flmi.privacy.linear import LinearRule
from flmi.privacy.setup import he_sites
from flmi.privacy.site import SecureSite
from flmi.privacy.wire import Payload, ProtocolError
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from tests.privacy import he_attacks
from tests.privacy.fakes import DropAt, FixedSite, Recorder, fixed_sites, plain_mean, train_all


def _server(holder: str = "site_0") -> HEServer:
    return HEServer(key_holder=holder, rule=LinearRule.WEIGHTED_MEAN, settings=CkksSettings())


def _secure(sites: list[FixedSite], *, holder: str = "site_0", t: int = 2) -> list[SecureSite]:
    out = he_sites(sites, key_holder=holder, min_contributions=t)
    assert all(isinstance(s, SecureSite) for s in out)
    return [s for s in out if isinstance(s, SecureSite)]


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _signed_round(
    server: HEServer, runtime: InProcessRuntime, reference: Params, rnd: int
) -> SignedSum:
    """Run a round honestly up to the signatures, as a hostile server would before attacking."""
    replies = train_all(runtime, reference, rnd)
    run = HERound(rnd=rnd, exchange=runtime)
    signed = server.collect(run, server.setup(run, sorted(replies)))
    assert signed is not None and not run.errors
    return signed


def _decrypt(holder: SecureSite, request: Payload, rnd: int) -> bytes | ClientError:
    return holder.exchange(stage=Stage.DECRYPT, rnd=rnd, payload=request.encode())


def _refused(reply: bytes | ClientError, match: str) -> None:
    assert isinstance(reply, ClientError), "the key holder decrypted what it must refuse"
    assert reply.code == ErrorCode.PROTOCOL_ERROR
    assert match in reply.message, reply.message


def _decrypted_sum(reply: bytes | ClientError) -> np.ndarray:
    assert isinstance(reply, bytes), reply
    return np.frombuffer(Payload.decode(reply, where="test").blobs["sum"], dtype="<f8")


def test_he_aggregate_matches_plain_mean_to_relative_l2_1e_6_over_two_rounds() -> None:
    sites, reference = fixed_sites(count=4, size=5000, seed=0)
    secure = _secure(sites, t=3)
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
    # Keys are made once: the second round moves ciphertexts only, fewer bytes down.
    assert outcomes[0].bytes_down > outcomes[1].bytes_down > 0
    # Only the key holder can decrypt; every other site holds the public context alone.
    assert [site.has_secret_key for site in secure] == [True, False, False, False]


def test_no_context_that_any_stage_carries_holds_a_secret_key() -> None:
    sites, reference = fixed_sites(count=3, size=100, seed=1)
    recorder = Recorder(InProcessRuntime(sites=_secure(sites, holder="site_1")))
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
    (keygen,) = [data for stage, _, data in recorder.received if stage == Stage.KEYGEN]
    public = ts.context_from(Payload.decode(keygen, where="test").blobs["public"])
    assert not public.is_private() and not public.has_secret_key()
    assert {stage for stage, _, _ in recorder.received} >= {Stage.INSTALL, Stage.ATTEST}


def test_the_server_receives_no_site_update_in_the_clear() -> None:
    sites, reference = fixed_sites(count=3, size=2000, seed=6)
    recorder = Recorder(InProcessRuntime(sites=_secure(sites)))

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
    decrypted = [stage for stage, _, _ in recorder.received if stage == Stage.DECRYPT]
    assert len(decrypted) == 1  # one plaintext comes back: the sum


def test_a_context_with_a_secret_key_is_refused_by_the_server() -> None:
    context = CkksSettings().make_context()

    with pytest.raises(ProtocolError, match="holds a secret key"):
        public_context(context.serialize(save_secret_key=True), where="test")


def test_he_bytes_are_counted_and_many_times_the_float32_update() -> None:
    sites, reference = fixed_sites(count=2, size=20_000, seed=2)
    runtime = InProcessRuntime(sites=_secure(sites))
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
    endpoints = _secure(sites, t=3)
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


def test_a_site_that_drops_before_signing_is_left_out_and_the_rest_sign_again() -> None:
    sites, reference = fixed_sites(count=4, size=300, seed=7)
    endpoints = _secure(sites, t=3)
    dropping = DropAt(site=endpoints[1], stage=Stage.ATTEST)
    runtime = InProcessRuntime(sites=[endpoints[0], dropping, endpoints[2], endpoints[3]])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is not None and outcome.contributors == 3
    expected = plain_mean(sites, reference, {"site_0", "site_2", "site_3"})
    for name, value in outcome.update.params.items():
        assert _relative_l2(value.astype(np.float64), expected[name]) < 1e-6


def test_the_round_is_refused_when_fewer_sites_than_t_can_sign() -> None:
    sites, reference = fixed_sites(count=4, size=50, seed=8)
    endpoints = _secure(sites, t=4)
    runtime = InProcessRuntime(
        sites=[*endpoints[:3], DropAt(site=endpoints[3], stage=Stage.ENCRYPT)]
    )

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert outcome.update is None and outcome.contributors == 0
    assert "privacy.he_min_contributions = 4" in outcome.errors["site_0"].message


def test_the_key_holder_refuses_a_single_update_a_forged_one_and_a_wrong_sum() -> None:
    # Arrange: a round run honestly up to the signatures; then the server turns hostile.
    sites, reference = fixed_sites(count=3, size=400, seed=4)
    secure = _secure(sites, t=2)
    runtime = InProcessRuntime(sites=secure)
    server = _server()
    signed = _signed_round(server, runtime, reference, 1)
    assert server.public is not None
    holder = secure[0]

    # Act / Assert: every request that is not the honest sum is refused ...
    _refused(_decrypt(holder, he_attacks.single(signed), 1), "would reveal too much")
    _refused(_decrypt(holder, he_attacks.duplicated(signed), 1), "listed twice")
    _refused(_decrypt(holder, he_attacks.forged(signed, server.public), 1), "is not attested by")
    _refused(_decrypt(holder, he_attacks.wrong_sum(signed), 1), "is not attested by")
    unsigned = signed.decrypt_request()
    _refused(
        _decrypt(
            holder,
            Payload(
                header=unsigned.header,
                blobs={n: b for n, b in unsigned.blobs.items() if n != "sig/site_2"},
            ),
            1,
        ),
        "is not attested by 'site_2'",
    )
    # ... and the honest one, asked last, still decrypts to the sum of the three updates.
    values = _decrypted_sum(_decrypt(holder, signed.decrypt_request(), 1))
    layout = signed.layout
    n_total = sum(s.n for s in sites)
    assert values[layout.num_floats :].round().tolist() == [n_total, pytest.approx(0, abs=1e9), 3]
    weighted = values[: reference["a.weight"].size]
    expected = sum(s.n * s.delta["a.weight"].astype(np.float64) for s in sites)
    assert _relative_l2(weighted, expected) < 1e-6


def test_the_key_holder_refuses_a_stale_round_and_a_second_sum_of_a_round() -> None:
    sites, reference = fixed_sites(count=3, size=100, seed=5)
    secure = _secure(sites, t=2)
    runtime = InProcessRuntime(sites=secure)
    server = _server()
    holder = secure[0]
    first = _signed_round(server, runtime, reference, 1)
    assert isinstance(_decrypt(holder, first.decrypt_request(), 1), bytes)
    second = _signed_round(server, runtime, reference, 2)

    # Round 1 again: one sum per round (two subsets of one round would give one site away).
    _refused(_decrypt(holder, first.decrypt_request(), 1), "round 1 is stale")
    # Round 1's signed sum presented as round 2's: the signatures name round 1.
    _refused(_decrypt(holder, he_attacks.restamped(first, 2), 2), "is not attested by")
    # Round 2's own signed sum is decrypted.
    assert isinstance(_decrypt(holder, second.decrypt_request(), 2), bytes)
    _refused(_decrypt(holder, second.decrypt_request(), 2), "round 2 is stale")


def test_a_site_signs_no_list_with_a_ciphertext_derived_after_it_revealed_its_own() -> None:
    # A colluding site could submit the negation of an honest site's ciphertext (CKKS
    # ciphertexts are malleable), cancelling it from the sum; commitments come first.
    sites, reference = fixed_sites(count=3, size=100, seed=9)
    secure = _secure(sites, t=3)
    runtime = InProcessRuntime(sites=secure)
    server = _server()
    signed = _signed_round(server, runtime, reference, 1)
    assert server.public is not None
    victim, cancelled, colluder = (e.site for e in signed.entries)
    negated = {
        n: (-ts.ckks_vector_from(server.public, b)).serialize()
        for n, b in signed.parts[cancelled].items()
    }
    parts = {**signed.parts, colluder: negated}
    entries = [
        Entry(site=victim, digest=signed.entries[0].digest),
        Entry(site=cancelled, digest=signed.entries[1].digest),
        Entry(site=colluder, digest=digest(negated)),
    ]
    blobs = {
        f"{part_prefix(i)}{name}": data
        for i, e in enumerate(entries)
        for name, data in parts[e.site].items()
    }
    ask = Payload(header={"round": 1, "entries": entries_to_wire(entries)}, blobs=blobs)

    reply = secure[0].exchange(stage=Stage.ATTEST, rnd=1, payload=ask.encode())

    _refused(reply, "did not see committed")


def test_a_site_reveals_its_ciphertext_against_one_list_only() -> None:
    sites, reference = fixed_sites(count=3, size=50, seed=10)
    secure = _secure(sites, t=2)
    runtime = InProcessRuntime(sites=secure)
    server = _server()
    signed = _signed_round(server, runtime, reference, 1)
    shorter = Payload(header={"round": 1, "entries": entries_to_wire(signed.entries[:2])})

    reply = secure[0].exchange(stage=Stage.REVEAL, rnd=1, payload=shorter.encode())

    _refused(reply, "already revealed its ciphertext against another list")


def test_a_site_refuses_a_public_context_the_key_holder_did_not_sign() -> None:
    # The server's own keys: if a site encrypted under them, the server could decrypt it.
    sites, _ = fixed_sites(count=2, size=10, seed=11)
    secure = _secure(sites)
    runtime = InProcessRuntime(sites=secure)
    announced = secure[0].exchange(
        stage=Stage.HELLO, rnd=1, payload=Payload(header={"round": 1}).encode()
    )
    assert isinstance(announced, bytes)
    hello = Payload.decode(announced, where="test")
    own = CkksSettings().make_context()
    own.make_context_public()
    install = Payload(
        header={"round": 1},
        blobs={
            "public": own.serialize(),
            "context_sig": bytes(64),
            **{f"holder/{k[4:]}": v for k, v in hello.blobs.items()},
        },
    )

    reply = runtime.exchange(stage=Stage.INSTALL, rnd=1, payloads={"site_1": install.encode()})

    _refused(reply["site_1"], "not signed by the key holder 'site_0'")
    assert not secure[1].has_secret_key
    # Nor can the server swap the key holder's own context for a public one.
    again = runtime.exchange(stage=Stage.INSTALL, rnd=1, payloads={"site_0": install.encode()})
    _refused(again["site_0"], "installs none")


class _SwapRunKey:
    """A relay that replaces one site's announced run key with one the server made."""

    def __init__(self, runtime: InProcessRuntime, *, site: str) -> None:
        self._runtime, self._site = runtime, site

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        replies = dict(self._runtime.exchange(stage=stage, rnd=rnd, payloads=payloads))
        reply = replies.get(self._site)
        if stage == Stage.HELLO and isinstance(reply, bytes):
            hello = Payload.decode(reply, where="test")
            mine = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
            replies[self._site] = Payload(
                header=hello.header, blobs={**hello.blobs, "ann/pk": mine}
            ).encode()
        return replies


def test_the_key_holder_refuses_a_run_key_the_sites_certificate_did_not_sign() -> None:
    sites, reference = fixed_sites(count=3, size=10, seed=12)
    inner = InProcessRuntime(sites=_secure(sites))
    relay = _SwapRunKey(inner, site="site_2")

    outcome = _server().aggregate(
        rnd=1, exchange=relay, replies=train_all(inner, reference, 1), reference=reference
    )

    assert "refused its run key" in outcome.errors["site_2"].message
    assert outcome.update is not None and outcome.contributors == 2


def test_the_key_holder_refuses_a_site_whose_certificate_another_ca_issued() -> None:
    sites, reference = fixed_sites(count=3, size=10, seed=13)
    secure = _secure(sites)
    impostor = he_sites(sites[2:], key_holder="site_0", min_contributions=2)[0]
    runtime = InProcessRuntime(sites=[secure[0], secure[1], impostor])

    outcome = _server().aggregate(
        rnd=1, exchange=runtime, replies=train_all(runtime, reference, 1), reference=reference
    )

    assert "refused its run key" in outcome.errors["site_2"].message
    assert outcome.update is not None and outcome.contributors == 2


def test_the_round_is_refused_when_the_key_holder_is_unavailable() -> None:
    sites, reference = fixed_sites(count=3, size=10, seed=5)
    endpoints: list[SiteEndpoint] = list(_secure(sites))
    runtime = InProcessRuntime(
        sites=[DropAt(site=_secure(sites)[0], stage=Stage.HELLO), *endpoints[1:]]
    )

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
    endpoints = _secure(sites)
    before = InProcessRuntime(sites=endpoints)
    server.aggregate(
        rnd=1, exchange=before, replies=train_all(before, reference, 1), reference=reference
    )
    # The key holder's new process: no context, a new run key (same certificate).
    restarted = SecureSite(site=sites[0], he_trust=endpoints[0]._he_trust)
    after = InProcessRuntime(sites=[restarted, *endpoints[1:]])

    lost = server.aggregate(
        rnd=2, exchange=after, replies=train_all(after, reference, 2), reference=reference
    )
    rekeyed = server.aggregate(
        rnd=3, exchange=after, replies=train_all(after, reference, 3), reference=reference
    )

    # Nobody else can decrypt round 2's sum: the round is lost, the next one rekeyed.
    assert lost.update is None and lost.errors["site_0"].code == ErrorCode.PROTOCOL_ERROR
    assert rekeyed.update is not None and rekeyed.contributors == 3 and not rekeyed.errors
    expected = plain_mean(sites, reference, {s.name for s in sites})
    for name, value in rekeyed.update.params.items():
        assert _relative_l2(value.astype(np.float64), expected[name]) < 1e-6
    assert restarted.has_secret_key
    assert not any(site.has_secret_key for site in endpoints[1:])
