"""Homomorphic aggregation with TenSEAL's CKKS scheme: the server adds ciphertexts.

Key management. One key-holder site (``privacy.he_key_holder``) makes the
CKKS context. It hands the *secret* context to every other site sealed to that
site (X25519 agreement with the recipient's fresh key, HKDF, then
ChaCha20-Poly1305) through the server's relay, which carries opaque bytes only;
the server receives the *public* context alone (no secret key) and refuses a
context that holds one. Stages:

1. ``he/hello``: sites without the context answer with a fresh X25519 public key;
2. ``he/keygen``: the key holder makes the context (once), seals it to each of
   them and returns the public context;
3. ``he/install``: each site opens its sealed context;
4. ``he/encrypt`` (every round): each site encrypts its terms of the sum;
   the server adds the ciphertexts under the public context;
5. ``he/decrypt``: one site holding the secret key (the key holder when it
   answers) decrypts the aggregate, and only the aggregate, for the server.

CKKS ciphertexts are many times larger than the float32 update they carry;
the bytes of every stage are counted and reported with the round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flmi.core.exchange import SecureRound, StagedExchange, StageReply, held_back
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainReply
from flmi.core.params import Params
from flmi.privacy.crypto import agree, load_public, public_bytes, seal, unseal
from flmi.privacy.linear import SCALARS, Layout, LinearRule, LinearTerms, equivalent_update
from flmi.privacy.wire import Payload, ProtocolError

log = logging.getLogger("flmi.privacy.he")

AGGREGATE_SITE = "he"


class Stage(StrEnum):
    """The homomorphic aggregation stages."""

    HELLO = "he/hello"
    KEYGEN = "he/keygen"
    INSTALL = "he/install"
    ENCRYPT = "he/encrypt"
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
    """Load a context the server may hold; one that carries a secret key is refused."""
    try:
        context = ts.context_from(data)
    except Exception as exc:  # TenSEAL raises plain exceptions on malformed bytes
        raise ProtocolError(f"{where}: not a TenSEAL context ({type(exc).__name__})") from None
    if context.is_private() or context.has_secret_key():
        raise ProtocolError(f"{where}: the context holds a secret key; the server takes none")
    return context


def _ad(rnd: int, holder: str, recipient: str) -> bytes:
    return f"flmi he|{rnd}|{holder}|{recipient}".encode()


def _chunks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    return [vector[i : i + slots] for i in range(0, max(vector.size, 1), slots)]


class HEClient:
    """A site's side of homomorphic aggregation; keeps its context across rounds.

    Parameters
    ----------
    site
        This site's name.
    settings
        The CKKS parameters the site makes a context with when it is the key holder.
    min_contributors
        Fewest updates an aggregate must hold before this site decrypts it.
    """

    def __init__(self, *, site: str, settings: CkksSettings, min_contributors: int = 2) -> None:
        self._site = site
        self._settings = settings
        self._min = min_contributors
        self._transport: X25519PrivateKey | None = None
        self._context: ts.Context | None = None

    @property
    def has_secret_key(self) -> bool:
        """Whether this site can decrypt."""
        return self._context is not None and self._context.is_private()

    def hello(self, request: Payload, *, rnd: int) -> Payload:
        """A fresh X25519 key to receive the secret context with."""
        self._transport = X25519PrivateKey.generate()
        return Payload(header={"round": rnd}, blobs={"pk": public_bytes(self._transport)})

    def keygen(self, request: Payload, *, rnd: int) -> Payload:
        """As key holder: make the context once, seal it to each peer; return the public one."""
        where = f"site '{self._site}' he keygen"
        if self._transport is None:
            raise ProtocolError(f"{where}: keygen before hello")
        if self._context is None:
            self._context = self._settings.make_context()
        secret = self._context.serialize(save_secret_key=True)
        public = self._context.copy()
        public.make_context_public()
        blobs = {"public": public.serialize(), "holder_pk": public_bytes(self._transport)}
        for peer in request.names("recipients", where=where):
            if peer == self._site:
                continue
            peer_pk = load_public(request.blob(f"pk/{peer}", where=where, size=32), where=where)
            key = agree(self._transport, peer_pk, purpose="he/context", rnd=rnd)
            blobs[f"to/{peer}"] = seal(key, secret, associated=_ad(rnd, self._site, peer))
        return Payload(header={"round": rnd}, blobs=blobs)

    def install(self, request: Payload, *, rnd: int) -> Payload:
        """Open the secret context the key holder sealed to this site."""
        where = f"site '{self._site}' he install"
        if self._transport is None:
            raise ProtocolError(f"{where}: install before hello")
        holder = request.field("key_holder", str, where=where)
        holder_pk = load_public(request.blob("holder_pk", where=where, size=32), where=where)
        key = agree(self._transport, holder_pk, purpose="he/context", rnd=rnd)
        secret = unseal(
            key,
            request.blob("sealed", where=where),
            associated=_ad(rnd, holder, self._site),
            where=where,
        )
        try:
            context = ts.context_from(secret)
        except Exception as exc:
            raise ProtocolError(f"{where}: not a TenSEAL context ({type(exc).__name__})") from None
        if not context.is_private():
            raise ProtocolError(f"{where}: the sealed context holds no secret key")
        self._context = context
        self._transport = None
        return Payload(header={"round": rnd, "installed": True})

    def encrypt(self, terms: LinearTerms, *, rnd: int) -> Payload:
        """The terms of the sum, encrypted chunk by chunk."""
        if self._context is None:
            raise ProtocolError(f"site '{self._site}': asked to encrypt without a context")
        vector = terms.float_vector()
        blobs = {
            f"c/{i:06d}": ts.ckks_vector(self._context, chunk.tolist()).serialize()
            for i, chunk in enumerate(_chunks(vector, self._settings.slots))
        }
        return Payload(header={"round": rnd, "layout": terms.layout.to_json()}, blobs=blobs)

    def decrypt(self, request: Payload, *, rnd: int) -> Payload:
        """Decrypt an aggregate of at least ``min_contributors`` updates."""
        where = f"site '{self._site}' he decrypt"
        if not self.has_secret_key:
            raise ProtocolError(f"{where}: this site holds no secret key")
        assert self._context is not None
        contributors = request.field("contributors", int, where=where)
        if contributors < self._min:
            raise ProtocolError(
                f"{where}: an aggregate of {contributors} update(s) would reveal a site's own; "
                f"this site decrypts sums of at least {self._min}"
            )
        size = request.field("size", int, where=where)
        out: list[np.ndarray] = []
        for name in sorted(request.blobs):
            try:
                vector = ts.ckks_vector_from(self._context, request.blobs[name])
            except Exception as exc:
                raise ProtocolError(f"{where}: '{name}' is not a CKKS vector ({exc})") from None
            out.append(np.asarray(vector.decrypt(), dtype=np.float64))
        total = np.concatenate(out) if out else np.zeros(0)
        if total.size != size:
            raise ProtocolError(f"{where}: the aggregate holds {total.size} values, not {size}")
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

    def aggregate(
        self,
        *,
        rnd: int,
        exchange: StagedExchange,
        replies: Mapping[str, TrainReply],
        reference: Params,
    ) -> SecureRound:
        """Set keys up where needed, collect ciphertexts, add them, have a site decrypt the sum."""
        run = _HERound(rnd=rnd, exchange=exchange)
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
        roster = self._setup(run, roster)
        update = None
        count = 0
        if len(roster) >= 2:
            update, count = self._sum(run, roster, reference)
        else:
            log.warning("he round %d: %d sites can encrypt; at least 2 needed", rnd, len(roster))
        return SecureRound(
            update=update,
            contributors=count,
            errors=run.errors,
            bytes_down=run.bytes_down,
            bytes_up=run.bytes_up,
        )

    def _setup(self, run: _HERound, roster: list[str]) -> list[str]:
        """Key the round's sites when one lacks the secret context: every one, from one context.

        A site lacks it in its first round, or after it failed to encrypt (it
        dropped out, or its process restarted and lost its context). Then the
        key holder seals its context (a new one if it lost its own) to every
        site of the round again, so that all encrypt under the same keys.
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
        request = Payload(
            header={"round": run.rnd, "recipients": recipients},
            blobs={f"pk/{s}": hello[s].blob("pk", where="he hello", size=32) for s in recipients},
        )
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
        self._installed.add(self._holder)
        holder_pk = keygen.blob("holder_pk", where="he keygen", size=32)
        installs = {
            s: Payload(
                header={"round": run.rnd, "key_holder": self._holder},
                blobs={"sealed": keygen.blob(f"to/{s}", where="he keygen"), "holder_pk": holder_pk},
            )
            for s in recipients
            if f"to/{s}" in keygen.blobs
        }
        for site, payload in run.stage(Stage.INSTALL, installs).items():
            if payload.header.get("installed") is True:
                self._installed.add(site)
        return [s for s in roster if s in self._installed]

    def _sum(
        self, run: _HERound, roster: list[str], reference: Params
    ) -> tuple[ClientUpdate | None, int]:
        assert self._public is not None
        request = {s: Payload(header={"round": run.rnd, "rule": self._rule.value}) for s in roster}
        encrypted = run.stage(Stage.ENCRYPT, request)
        for site in roster:
            if site not in encrypted:  # dropped, or lost its context: key it again when seen
                self._installed.discard(site)
        layouts: dict[str, Layout] = {}
        for site, payload in sorted(encrypted.items()):
            try:
                layouts[site] = Layout.from_json(payload.header.get("layout"), where="he encrypt")
            except ProtocolError as exc:
                run.fail(site, ErrorCode.PROTOCOL_ERROR, str(exc))
        if len(layouts) < 2:
            return None, 0
        first = sorted(layouts)[0]
        layout = layouts[first]
        total: list[ts.CKKSVector] | None = None
        contributors: list[str] = []
        for site in sorted(layouts):
            if layouts[site] != layout:
                run.fail(site, ErrorCode.SCHEMA_MISMATCH, "update layout differs from the round's")
                continue
            payload = encrypted[site]
            try:
                vectors = [
                    ts.ckks_vector_from(self._public, payload.blobs[name])
                    for name in sorted(payload.blobs)
                ]
            except Exception as exc:
                run.fail(site, ErrorCode.PROTOCOL_ERROR, f"not CKKS ciphertexts ({exc})")
                continue
            if total is None:
                total = vectors
            elif len(vectors) != len(total):
                run.fail(site, ErrorCode.PROTOCOL_ERROR, "wrong number of ciphertexts")
                continue
            else:
                total = [a + b for a, b in zip(total, vectors, strict=True)]
            contributors.append(site)
        if total is None or len(contributors) < 2:
            return None, 0
        size = layout.num_floats + len(SCALARS)
        blobs = {f"c/{i:06d}": v.serialize() for i, v in enumerate(total)}
        order = [self._holder] if self._holder in contributors else []
        order += [s for s in contributors if s != self._holder]
        plain: Payload | None = None
        for site in order:
            header = {"round": run.rnd, "contributors": len(contributors), "size": size}
            plain = run.stage(Stage.DECRYPT, {site: Payload(header=header, blobs=blobs)}).get(site)
            if plain is not None:
                break
        if plain is None:
            return None, 0
        values = np.frombuffer(plain.blob("sum", where="he decrypt", size=8 * size), dtype="<f8")
        floats = layout.num_floats
        n_sum, n_tau_sum, count = (round(float(v)) for v in values[floats:])
        if count != len(contributors):
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


class _HERound:
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
        encoded = {s: p.encode() for s, p in sorted(payloads.items())}
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
