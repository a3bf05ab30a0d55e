"""Homomorphic aggregation with TenSEAL's CKKS scheme: the server adds ciphertexts.

Who can read what. One key-holder site (``privacy.he_key_holder``, fixed by
the federation config every site holds, not by the server) makes the CKKS
keys and is the only party that ever holds the secret key. Every other site
and the server receive the *public* context alone. The key holder decrypts
only a sum it can check is an honest one, without ever seeing a single site's
ciphertext:

* every site signs with a fresh Ed25519 run key that its certificate (the
  consortium CA's, :mod:`flmi.privacy.identity`) vouches for, so the server,
  which relays every message, cannot speak for a site;
* a site commits to its ciphertext (its SHA-256) before anyone's ciphertext
  is shown to anyone, and reveals it only against one fixed list of the
  round's commitments; a ciphertext that a colluding site derives from
  another's (CKKS ciphertexts are malleable: anyone can negate or add them)
  therefore cannot be in a list an honest site accepted;
* every site in the sum recomputes the sum from the listed ciphertexts
  itself (it holds no secret key: seeing them tells it nothing) and signs
  (run key id, round, list, sum digest);
* the key holder decrypts a sum only when at least ``t``
  (``privacy.he_min_contributions``) distinct sites of the current round
  signed exactly that list and that sum, and at most one sum per round, in
  increasing rounds (a second sum of the same round would let the server
  difference two subsets).

Reading one site's update so takes the server together with the key holder,
or the server together with ``t - 1`` other sites (which is what any sum of
``t`` updates gives away). Stages:

1. ``he/hello``: each site announces its run key (certificate-bound);
2. ``he/keygen``: the key holder checks the announcements, makes the context
   (once) and signs its public part;
3. ``he/install``: each other site checks that the key holder signed the
   public context and installs it (a context with a secret key is refused);
4. ``he/encrypt`` (every round): each site encrypts its terms of the sum and
   commits to the ciphertext;
5. ``he/reveal``: each site sends its ciphertext against the list of commitments;
6. ``he/attest``: each listed site recomputes the sum and signs it;
7. ``he/decrypt``: the key holder checks the signatures and decrypts the sum.

CKKS ciphertexts are many times larger than the float32 update they carry,
and every listed site downloads every listed ciphertext to check the sum; the
bytes of every stage are counted and reported with the round.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flmi.core.exchange import SecureRound, StagedExchange, StageReply, held_back
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainReply
from flmi.core.params import Params
from flmi.privacy.he_sums import (
    Entry,
    HETrust,
    SignedSum,
    add_ciphertexts,
    attestation,
    context_message,
    digest,
    entries_from,
    entries_to_wire,
    part_prefix,
)
from flmi.privacy.identity import Announcement, RunKey, verify_signature
from flmi.privacy.linear import Layout, LinearRule, LinearTerms, equivalent_update
from flmi.privacy.wire import Payload, ProtocolError

log = logging.getLogger("flmi.privacy.he")

AGGREGATE_SITE = "he"
#: Most attempts at collecting the signatures of one sum when sites drop out.
ATTEST_ATTEMPTS = 3


class Stage(StrEnum):
    """The homomorphic aggregation stages."""

    HELLO = "he/hello"
    KEYGEN = "he/keygen"
    INSTALL = "he/install"
    ENCRYPT = "he/encrypt"
    REVEAL = "he/reveal"
    ATTEST = "he/attest"
    DECRYPT = "he/decrypt"


@dataclass(frozen=True)
class CkksSettings:
    """The CKKS parameters the key holder makes its context with.

    Parameters
    ----------
    poly_modulus_degree
        Ring dimension (``privacy.he_poly_modulus_degree``): 8192, 16384 or
        32768; one ciphertext holds half as many values.
    scale_bits
        Bits of the fixed-point scale (``privacy.he_scale_bits``), 20..50:
        more bits, smaller rounding error.
    """

    poly_modulus_degree: int = 8192
    scale_bits: int = 40

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in (8192, 16384, 32768):
            raise ValueError(
                "privacy.he_poly_modulus_degree must be 8192, 16384 or 32768, "
                f"got {self.poly_modulus_degree}"
            )
        if not 20 <= self.scale_bits <= 50:
            raise ValueError(f"privacy.he_scale_bits must be in 20..50, got {self.scale_bits}")

    @property
    def slots(self) -> int:
        """Values one ciphertext holds."""
        return self.poly_modulus_degree // 2

    def make_context(self) -> ts.Context:
        """A fresh secret CKKS context (additions only: one data level)."""
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=self.poly_modulus_degree,
            coeff_mod_bit_sizes=[60, self.scale_bits, 60],
        )
        context.global_scale = float(2**self.scale_bits)
        return context


def public_context(data: bytes, *, where: str) -> ts.Context:
    """Load a context the server or a site may hold; one that carries a secret key is refused."""
    try:
        context = ts.context_from(data)
    except Exception as exc:  # TenSEAL raises plain exceptions on malformed bytes
        raise ProtocolError(f"{where}: not a TenSEAL context ({type(exc).__name__})") from None
    if context.is_private() or context.has_secret_key():
        raise ProtocolError(
            f"{where}: the context holds a secret key; only the key holder may hold one"
        )
    return context


@dataclass
class _Contribution:
    """A site's ciphertext of one round, and the list of commitments it revealed it against."""

    rnd: int
    blobs: dict[str, bytes]
    digest: str
    fixed: frozenset[Entry] | None = None


def _chunks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    return [vector[i : i + slots] for i in range(0, max(vector.size, 1), slots)]


class HEClient:
    """A site's side of homomorphic aggregation; keeps its context and run key across rounds.

    Parameters
    ----------
    site
        This site's name.
    settings
        The CKKS parameters the site makes a context with when it is the key holder.
    trust
        The site's credential, the CA, the key holder and ``t``.
    """

    def __init__(self, *, site: str, settings: CkksSettings, trust: HETrust) -> None:
        if trust.credential.site != site:
            raise ValueError(f"site '{site}' holds the credential of '{trust.credential.site}'")
        self._site = site
        self._settings = settings
        self._trust = trust
        self._run_key = RunKey(credential=trust.credential)
        self._context: ts.Context | None = None
        self._key_id = ""
        self._contribution: _Contribution | None = None
        #: The key holder's: each site's run key, as its certificate vouched for it.
        self._directory: dict[str, Ed25519PublicKey] = {}
        self._last_decrypted = 0

    @property
    def is_key_holder(self) -> bool:
        """Whether this site is the configured key holder."""
        return self._trust.key_holder == self._site

    @property
    def has_secret_key(self) -> bool:
        """Whether this site can decrypt."""
        return self._context is not None and self._context.is_private()

    def hello(self, request: Payload, *, rnd: int) -> Payload:
        """This site's run key, signed with its certificate key."""
        return Payload(header={"round": rnd}, blobs=self._run_key.announcement.blobs("ann"))

    def keygen(self, request: Payload, *, rnd: int) -> Payload:
        """As key holder: check each site's run key, make the context once, sign its public part."""
        where = f"site '{self._site}' he keygen"
        if not self.is_key_holder:
            raise ProtocolError(
                f"{where}: this site is not the key holder ('{self._trust.key_holder}' is)"
            )
        refused: list[str] = []
        for peer in request.names("recipients", where=where):
            if peer == self._site:
                continue
            try:
                announced = Announcement.from_payload(
                    request, prefix=f"ann/{peer}", site=peer, where=where
                )
                self._directory[peer] = announced.verified(self._trust.authority, where=where)
            except ProtocolError as exc:
                log.warning("%s", exc)
                self._directory.pop(peer, None)
                refused.append(peer)
        self._directory[self._site] = Ed25519PublicKey.from_public_bytes(self._run_key.public)
        if self._context is None:
            self._context = self._settings.make_context()
            self._last_decrypted = 0
        public = self._context.copy()
        public.make_context_public()
        data = public.serialize()
        self._key_id = hashlib.sha256(data).hexdigest()
        signature = self._run_key.sign(context_message(self._site, self._key_id))
        return Payload(
            header={"round": rnd, "refused": refused},
            blobs={"public": data, "context_sig": signature},
        )

    def install(self, request: Payload, *, rnd: int) -> Payload:
        """Install the public context once the key holder's run key is seen to have signed it."""
        where = f"site '{self._site}' he install"
        holder = self._trust.key_holder
        if self.is_key_holder:
            raise ProtocolError(f"{where}: the key holder makes its own context and installs none")
        announced = Announcement.from_payload(request, prefix="holder", site=holder, where=where)
        holder_key = announced.verified(self._trust.authority, where=where)
        data = request.blob("public", where=where)
        key_id = hashlib.sha256(data).hexdigest()
        if not verify_signature(
            holder_key,
            signature=request.blob("context_sig", where=where),
            message=context_message(holder, key_id),
        ):
            raise ProtocolError(
                f"{where}: the context is not signed by the key holder '{holder}'; refused"
            )
        self._context = public_context(data, where=where)
        self._key_id = key_id
        self._contribution = None
        return Payload(header={"round": rnd, "installed": True})

    def encrypt(self, terms: LinearTerms, *, rnd: int) -> Payload:
        """Encrypt the terms of the sum, keep the ciphertext, and commit to it."""
        if self._context is None:
            raise ProtocolError(f"site '{self._site}': asked to encrypt without a context")
        vector = terms.float_vector()
        blobs = {
            f"c/{i:06d}": ts.ckks_vector(self._context, chunk.tolist()).serialize()
            for i, chunk in enumerate(_chunks(vector, self._settings.slots))
        }
        self._contribution = _Contribution(rnd=rnd, blobs=blobs, digest=digest(blobs))
        return Payload(
            header={
                "round": rnd,
                "layout": terms.layout.to_json(),
                "digest": self._contribution.digest,
            }
        )

    def _listed(
        self, request: Payload, *, rnd: int, where: str
    ) -> tuple[_Contribution, list[Entry]]:
        own = self._contribution
        if own is None or own.rnd != rnd:
            raise ProtocolError(f"{where}: this site encrypted nothing in round {rnd}")
        entries = entries_from(request, where=where)
        if Entry(site=self._site, digest=own.digest) not in entries:
            raise ProtocolError(f"{where}: this site's ciphertext is not in the list")
        t = self._trust.min_contributions
        if len(entries) < t:
            raise ProtocolError(
                f"{where}: a sum of {len(entries)} contribution(s) is refused; "
                f"privacy.he_min_contributions = {t}"
            )
        return own, entries

    def reveal(self, request: Payload, *, rnd: int) -> Payload:
        """Send the ciphertext against one list of commitments, fixed from now on for the round."""
        where = f"site '{self._site}' he reveal"
        own, entries = self._listed(request, rnd=rnd, where=where)
        listed = frozenset(entries)
        if own.fixed is None:
            own.fixed = listed
        elif own.fixed != listed:
            raise ProtocolError(
                f"{where}: this site already revealed its ciphertext against another list"
            )
        return Payload(header={"round": rnd}, blobs=own.blobs)

    def attest(self, request: Payload, *, rnd: int) -> Payload:
        """Recompute the listed sum and sign it, if every entry was committed before the reveal."""
        where = f"site '{self._site}' he attest"
        own, entries = self._listed(request, rnd=rnd, where=where)
        if own.fixed is None or not set(entries) <= own.fixed:
            raise ProtocolError(
                f"{where}: the list holds a contribution this site did not see committed"
            )
        assert self._context is not None
        parts: list[dict[str, bytes]] = []
        for index, entry in enumerate(entries):
            prefix = part_prefix(index)
            part = {n[len(prefix) :]: b for n, b in request.blobs.items() if n.startswith(prefix)}
            if digest(part) != entry.digest:
                raise ProtocolError(
                    f"{where}: the ciphertext shown for '{entry.site}' is not the one committed"
                )
            parts.append(part)
        total = digest(add_ciphertexts(self._context, parts, where=where))
        message = attestation(key_id=self._key_id, rnd=rnd, entries=entries, sum_digest=total)
        return Payload(
            header={"round": rnd, "sum_digest": total}, blobs={"sig": self._run_key.sign(message)}
        )

    def decrypt(self, request: Payload, *, rnd: int) -> Payload:
        """As key holder: decrypt a sum signed by ``t`` sites of this round; one sum per round."""
        where = f"site '{self._site}' he decrypt"
        if not self.has_secret_key:
            raise ProtocolError(f"{where}: this site holds no secret key")
        assert self._context is not None
        if rnd <= self._last_decrypted:
            raise ProtocolError(
                f"{where}: round {rnd} is stale: this site already decrypted the sum of round "
                f"{self._last_decrypted} and decrypts one sum per round, in increasing rounds"
            )
        entries = entries_from(request, where=where)
        t = self._trust.min_contributions
        if len(entries) < t:
            raise ProtocolError(
                f"{where}: a sum of {len(entries)} contribution(s) would reveal too much; this "
                f"site decrypts sums signed by at least privacy.he_min_contributions = {t} sites"
            )
        chunks = {n: b for n, b in request.blobs.items() if n.startswith("c/")}
        message = attestation(
            key_id=self._key_id, rnd=rnd, entries=entries, sum_digest=digest(chunks)
        )
        for entry in entries:
            key = self._directory.get(entry.site)
            signature = request.blobs.get(f"sig/{entry.site}", b"")
            if key is None or not verify_signature(key, signature=signature, message=message):
                raise ProtocolError(
                    f"{where}: the sum is not attested by '{entry.site}' (a forged or changed "
                    "contribution, another round's, or a sum that is not of the listed ones)"
                )
        size = request.field("size", int, where=where)
        out: list[np.ndarray] = []
        for name in sorted(chunks):
            try:
                vector = ts.ckks_vector_from(self._context, chunks[name])
            except Exception as exc:
                raise ProtocolError(f"{where}: '{name}' is not a CKKS vector ({exc})") from None
            out.append(np.asarray(vector.decrypt(), dtype=np.float64))
        total = np.concatenate(out) if out else np.zeros(0)
        if total.size != size:
            raise ProtocolError(f"{where}: the aggregate holds {total.size} values, not {size}")
        self._last_decrypted = rnd
        return Payload(header={"round": rnd}, blobs={"sum": total.astype("<f8").tobytes()})


class HEServer:
    """Homomorphic aggregation's server side: holds public contexts only, adds ciphertexts.

    Parameters
    ----------
    key_holder
        The site that makes the context (``privacy.he_key_holder``).
    rule
        The strategy's linear rule.
    settings
        The CKKS parameters (the key holder makes the context with its own copy).
    """

    def __init__(self, *, key_holder: str, rule: LinearRule, settings: CkksSettings) -> None:
        self._holder = key_holder
        self._rule = rule
        self._settings = settings
        self._public: ts.Context | None = None
        self._installed: set[str] = set()
        #: Every context the server has loaded (each checked to hold no secret key).
        self.contexts: list[ts.Context] = []

    @property
    def name(self) -> str:
        """``"he"``."""
        return "he"

    @property
    def key_holder(self) -> str:
        """The site that decrypts."""
        return self._holder

    @property
    def public(self) -> ts.Context | None:
        """The public context the round's sites encrypt under (``None`` before keying)."""
        return self._public

    def aggregate(
        self,
        *,
        rnd: int,
        exchange: StagedExchange,
        replies: Mapping[str, TrainReply],
        reference: Params,
    ) -> SecureRound:
        """Set keys up where needed, collect signed ciphertexts, have the key holder decrypt."""
        run = HERound(rnd=rnd, exchange=exchange)
        roster: list[str] = []
        for site, reply in sorted(replies.items()):
            if isinstance(reply, ClientError):
                run.errors[site] = reply
            elif held_back(reply):
                roster.append(site)
            else:
                run.fail(
                    site, ErrorCode.REJECTED_BY_SERVER, "sent its update in the clear; discarded"
                )
        roster = self.setup(run, roster)
        update = None
        count = 0
        signed = self.collect(run, roster) if len(roster) >= 2 else None
        if len(roster) < 2:
            log.warning("he round %d: %d sites can encrypt; at least 2 needed", rnd, len(roster))
        if signed is not None:
            update, count = self._decrypt(run, signed, reference)
        return SecureRound(
            update=update,
            contributors=count,
            errors=run.errors,
            bytes_down=run.bytes_down,
            bytes_up=run.bytes_up,
        )

    def setup(self, run: HERound, roster: list[str]) -> list[str]:
        """Key the round's sites when one lacks the public context: every one, from one context.

        A site lacks it in its first round, or after it failed to encrypt (it
        dropped out, or its process restarted and lost its context and run
        key). Then every site of the round and the key holder announce their
        run keys again, the key holder checks them (and makes a new context if
        it lost its own), and every site installs the public context the key
        holder signed, so that all encrypt under the same keys.
        """
        missing = [s for s in roster if s not in self._installed]
        if not missing:
            return roster
        targets = sorted(set(roster) | {self._holder})
        hello = run.stage(Stage.HELLO, {s: Payload(header={"round": run.rnd}) for s in targets})
        if self._holder not in hello:
            log.warning("he round %d: key holder '%s' is unavailable", run.rnd, self._holder)
            return [s for s in roster if s in self._installed]
        recipients = sorted(s for s in hello if s != self._holder)
        blobs: dict[str, bytes] = {}
        for site in recipients:
            blobs.update({f"ann/{site}/{k[4:]}": v for k, v in hello[site].blobs.items()})
        request = Payload(header={"round": run.rnd, "recipients": recipients}, blobs=blobs)
        keygen = run.stage(Stage.KEYGEN, {self._holder: request}).get(self._holder)
        if keygen is None:
            return [s for s in roster if s in self._installed]
        try:
            context = public_context(keygen.blob("public", where="he keygen"), where="he keygen")
        except ProtocolError as exc:
            run.fail(self._holder, ErrorCode.PROTOCOL_ERROR, str(exc))
            return []
        self._public = context
        self.contexts.append(context)
        self._installed = {self._holder}
        refused = set(keygen.header.get("refused") or [])
        for site in sorted(refused):
            run.fail(site, ErrorCode.PROTOCOL_ERROR, "the key holder refused its run key")
        holder = {f"holder/{k[4:]}": v for k, v in hello[self._holder].blobs.items()}
        install_blobs = {
            "public": keygen.blob("public", where="he keygen"),
            "context_sig": keygen.blob("context_sig", where="he keygen"),
            **holder,
        }
        installs = {
            s: Payload(header={"round": run.rnd}, blobs=install_blobs)
            for s in recipients
            if s not in refused
        }
        for site, payload in run.stage(Stage.INSTALL, installs).items():
            if payload.header.get("installed") is True:
                self._installed.add(site)
        return [s for s in roster if s in self._installed]

    def collect(self, run: HERound, roster: list[str]) -> SignedSum | None:
        """Commitments, then ciphertexts, then every listed site's signature of the sum."""
        assert self._public is not None
        request = {s: Payload(header={"round": run.rnd, "rule": self._rule.value}) for s in roster}
        committed = run.stage(Stage.ENCRYPT, request)
        for site in roster:
            if site not in committed:  # dropped, or lost its context: key it again when seen
                self._installed.discard(site)
        layouts: dict[str, Layout] = {}
        entries: list[Entry] = []
        for site, payload in sorted(committed.items()):
            try:
                layouts[site] = Layout.from_json(payload.header.get("layout"), where="he encrypt")
                entries.append(Entry(site=site, digest=payload.field("digest", str, where=site)))
            except ProtocolError as exc:
                run.fail(site, ErrorCode.PROTOCOL_ERROR, str(exc))
        if len(entries) < 2:
            return None
        layout = layouts[entries[0].site]
        for entry in list(entries):
            if layouts[entry.site] != layout:
                run.fail(
                    entry.site, ErrorCode.SCHEMA_MISMATCH, "update layout differs from the round's"
                )
                entries.remove(entry)
        listed = Payload(header={"round": run.rnd, "entries": entries_to_wire(entries)})
        revealed = run.stage(Stage.REVEAL, {e.site: listed for e in entries})
        parts: dict[str, dict[str, bytes]] = {}
        for entry in entries:
            shown = revealed.get(entry.site)
            if shown is None:
                continue
            if digest(shown.blobs) != entry.digest:
                run.fail(entry.site, ErrorCode.PROTOCOL_ERROR, "revealed another ciphertext")
                continue
            parts[entry.site] = dict(shown.blobs)
        chosen = [e for e in entries if e.site in parts]
        for _ in range(ATTEST_ATTEMPTS):
            if len(chosen) < 2:
                return None
            try:
                chunks = add_ciphertexts(
                    self._public, [parts[e.site] for e in chosen], where="he sum"
                )
            except ProtocolError as exc:
                log.warning("he round %d: %s", run.rnd, exc)
                return None
            blobs = {
                f"{part_prefix(i)}{name}": data
                for i, e in enumerate(chosen)
                for name, data in parts[e.site].items()
            }
            ask = Payload(
                header={"round": run.rnd, "entries": entries_to_wire(chosen)}, blobs=blobs
            )
            attested = run.stage(Stage.ATTEST, {e.site: ask for e in chosen})
            signatures = {s: p.blobs["sig"] for s, p in attested.items() if "sig" in p.blobs}
            if len(signatures) == len(chosen):
                return SignedSum(
                    rnd=run.rnd,
                    entries=chosen,
                    chunks=chunks,
                    signatures=signatures,
                    layout=layout,
                    parts={e.site: parts[e.site] for e in chosen},
                )
            chosen = [e for e in chosen if e.site in signatures]
        return None

    def _decrypt(
        self, run: HERound, signed: SignedSum, reference: Params
    ) -> tuple[ClientUpdate | None, int]:
        plain = run.stage(Stage.DECRYPT, {self._holder: signed.decrypt_request()}).get(self._holder)
        if plain is None:
            return None, 0
        size = signed.size
        values = np.frombuffer(plain.blob("sum", where="he decrypt", size=8 * size), dtype="<f8")
        layout = signed.layout
        floats = layout.num_floats
        n_sum, n_tau_sum, count = (round(float(v)) for v in values[floats:])
        if count != len(signed.entries):
            log.warning("he round %d: decrypted count %d is not the contributors'", run.rnd, count)
            return None, 0
        update = equivalent_update(
            layout=layout,
            weighted_sum=values[: layout.num_weighted],
            unweighted_sum=values[layout.num_weighted : floats],
            n_sum=n_sum,
            n_tau_sum=n_tau_sum,
            rule=self._rule,
            reference=reference,
            site=AGGREGATE_SITE,
        )
        return update, count


class HERound:
    """One round's stage traffic: sends, decodes replies, counts bytes, records failures."""

    def __init__(self, *, rnd: int, exchange: StagedExchange) -> None:
        self.rnd = rnd
        self._exchange = exchange
        self.errors: dict[str, ClientError] = {}
        self.bytes_down = 0
        self.bytes_up = 0

    def fail(self, site: str, code: ErrorCode, message: str) -> None:
        log.warning("he round %d: site %s: %s", self.rnd, site, message)
        self.errors.setdefault(site, ClientError(site=site, code=code, message=message))

    def stage(self, stage: Stage, payloads: Mapping[str, Payload]) -> dict[str, Payload]:
        """Send one stage; the decoded replies of the sites that answered it."""
        if not payloads:
            return {}
        once: dict[int, bytes] = {}  # one payload sent to many sites is encoded once
        encoded: dict[str, bytes] = {}
        for site, payload in sorted(payloads.items()):
            if id(payload) not in once:
                once[id(payload)] = payload.encode()
            encoded[site] = once[id(payload)]
        self.bytes_down += sum(len(b) for b in encoded.values())
        replies: Mapping[str, StageReply] = self._exchange.exchange(
            stage=stage, rnd=self.rnd, payloads=encoded
        )
        out: dict[str, Payload] = {}
        for site, reply in sorted(replies.items()):
            if site not in encoded:
                continue
            if isinstance(reply, ClientError):
                self.fail(site, reply.code, reply.message)
                continue
            self.bytes_up += len(reply)
            where = f"he round {self.rnd}: {stage} reply from site '{site}'"
            try:
                payload = Payload.decode(reply, where=where)
                if payload.header.get("round") != self.rnd:
                    raise ProtocolError(f"{where}: belongs to another round")
            except ProtocolError as exc:
                self.fail(site, ErrorCode.PROTOCOL_ERROR, str(exc))
                continue
            out[site] = payload
        return out
