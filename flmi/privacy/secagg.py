"""Secure aggregation that survives dropouts (Bonawitz et al. 2017, semi-honest server).

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal and
Seth, "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017; with the per-round keys and the vectorised masks of SecAgg+ (Bell
et al., CCS 2020) over the complete graph of a hospital federation's few sites.

Four stages per round, each one opaque message per site relayed by the server:

1. ``secagg/advertise``: the server names the round's roster, the threshold
   ``t`` and the fixed-point settings. Each site validates its update (finite,
   within ``+-clip``), quantises it, and answers with two fresh X25519 public
   keys (one to encrypt shares, one to agree masks) and its layout.
2. ``secagg/share``: the server sends everyone's public keys. Each site draws
   a self-mask seed ``b_u``, Shamir-shares ``b_u`` and its mask key with
   threshold ``t`` and encrypts one share pair to each other site
   (ChaCha20-Poly1305 under their agreed key): the server cannot read them.
3. ``secagg/masked``: the server relays each site its shares. Each site sends
   ``y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)`` in the
   ring of integers modulo 2^64, where ``s_uv`` comes from X25519 agreement.
   One masked vector is uniformly distributed: it tells the server nothing.
4. ``secagg/unmask``: the server names who sent a masked vector (survivors)
   and who did not (dropped). Each survivor sends its share of ``b_u`` for every
   survivor and its share of the mask key for every dropped site, never both
   for one site. With ``t`` answers the server removes the self-masks and the
   dropped sites' pairwise masks: the pairwise masks between survivors cancel.

Keys and seeds are fresh every round, so masks never repeat. A masked vector
that arrives after its stage has closed is ignored (:meth:`SecAggRound.receive`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flmi.core.exchange import SecureRound, StagedExchange, StageReply, held_back
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainReply
from flmi.core.params import Params
from flmi.privacy import shamir
from flmi.privacy.crypto import agree, load_public, mask, public_bytes, seal, unseal
from flmi.privacy.linear import SCALARS, Layout, LinearRule, LinearTerms, equivalent_update
from flmi.privacy.wire import Payload, ProtocolError

log = logging.getLogger("flmi.privacy.secagg")

#: The ring: every masked value is an integer modulo 2^64 (numpy's uint64 wraps).
RING_BITS = 64
#: The name the equivalent update carries (no site's name: it is everyone's).
AGGREGATE_SITE = "secagg"


class Stage(StrEnum):
    """The secure aggregation stages, in order."""

    ADVERTISE = "secagg/advertise"
    SHARE = "secagg/share"
    MASKED = "secagg/masked"
    UNMASK = "secagg/unmask"


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of values in ``[-clip, clip]`` with ``bits`` bits (sign included).

    Parameters
    ----------
    clip
        Largest magnitude an update value may have (``privacy.secagg_clip``).
    bits
        Bits of one quantised value (``privacy.secagg_bits``); the rounding
        error of one value is at most ``clip / (2^(bits-1) - 1) / 2``.
    """

    clip: float
    bits: int

    def __post_init__(self) -> None:
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"privacy.secagg_clip must be positive and finite, got {self.clip}")
        if not 8 <= self.bits <= 48:
            raise ValueError(f"privacy.secagg_bits must be in 8..48, got {self.bits}")

    @property
    def levels(self) -> int:
        """The largest quantised magnitude, ``2^(bits-1) - 1``."""
        return (1 << (self.bits - 1)) - 1

    @property
    def step(self) -> float:
        """The value of one quantisation step."""
        return self.clip / self.levels

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Round ``values`` (all within ``+-clip``) to int64 multiples of :attr:`step`."""
        return np.rint(values * (self.levels / self.clip)).astype(np.int64)

    def decode(self, ints: np.ndarray) -> np.ndarray:
        """Float64 values of int64 multiples of :attr:`step`."""
        return ints.astype(np.float64) * self.step

    def max_weight(self, sites: int) -> int:
        """Largest example count a site may weight by so that a sum over ``sites`` cannot wrap."""
        return int(((1 << (RING_BITS - 1)) - 1) // (self.levels * max(sites, 1)))


def out_of_range(terms: LinearTerms, fixed: FixedPoint) -> str | None:
    """Why ``terms`` cannot be quantised with ``fixed`` (``None``: they can)."""
    for part, values in (("update", terms.weighted), ("extras", terms.unweighted)):
        if values.size and float(np.max(np.abs(values))) > fixed.clip:
            biggest = float(np.max(np.abs(values)))
            return (
                f"{part} value of magnitude {biggest:.4g} lies outside privacy.secagg_clip = "
                f"{fixed.clip:g}; raise privacy.secagg_clip (or lower federation.lr)"
            )
    return None


def quantised_vector(terms: LinearTerms, fixed: FixedPoint) -> np.ndarray:
    """``[n * q(weighted), q(unweighted), n, n * tau, 1]`` as ring elements (uint64)."""
    weighted = fixed.encode(terms.weighted) * np.int64(terms.n)
    unweighted = fixed.encode(terms.unweighted)
    scalars = np.array([terms.n, terms.n_tau, 1], dtype=np.int64)
    return np.concatenate([weighted, unweighted, scalars]).view(np.uint64)


def _sign(me: str, other: str) -> bool:
    """Whether ``me`` adds (``True``) or subtracts the mask it shares with ``other``."""
    return me < other


def _hex(value: int) -> str:
    return format(value, "x")


def _int(value: Any, *, where: str) -> int:
    if not isinstance(value, str) or not value or len(value) > 140:
        raise ProtocolError(f"{where}: a share is not a hexadecimal field element")
    try:
        return int(value, 16)
    except ValueError:
        raise ProtocolError(f"{where}: a share is not a hexadecimal field element") from None


# --------------------------------------------------------------------------- site side


@dataclass(frozen=True)
class SecAggPolicy:
    """The bounds a site enforces on every secure aggregation round, whatever the server asks.

    Parameters
    ----------
    min_roster
        Fewest sites a round may hold: a sum over fewer hides too little.
    """

    min_roster: int = 2


class SecAggClient:
    """One site's side of one secure aggregation round.

    Made at the advertise stage from the site's held-back terms; answers the
    later stages of the same round and is discarded after unmasking.

    Parameters
    ----------
    site
        This site's name.
    rnd
        The round.
    terms
        The site's terms of the sum (:func:`flmi.privacy.linear.linear_terms`).
    request
        The server's advertise message.
    policy
        The site's own bounds.
    """

    def __init__(
        self,
        *,
        site: str,
        rnd: int,
        terms: LinearTerms,
        request: Payload,
        policy: SecAggPolicy,
    ) -> None:
        where = f"site '{site}' secagg round {rnd}"
        self._site, self._rnd, self._where = site, rnd, where
        roster = request.names("roster", where=where)
        threshold = request.field("threshold", int, where=where)
        if site not in roster:
            raise ProtocolError(f"{where}: this site is not in the round's roster")
        if len(roster) < policy.min_roster:
            raise ProtocolError(
                f"{where}: a roster of {len(roster)} sites is below this site's minimum of "
                f"{policy.min_roster}"
            )
        if not len(roster) // 2 < threshold <= len(roster):
            raise ProtocolError(
                f"{where}: threshold {threshold} must exceed half the roster of {len(roster)} "
                "(and not exceed it), or the server could unmask a single site"
            )
        self._fixed = FixedPoint(
            clip=float(request.field("clip", float, where=where)),
            bits=request.field("bits", int, where=where),
        )
        if terms.n > self._fixed.max_weight(len(roster)):
            raise ProtocolError(
                f"{where}: {terms.n} examples times {len(roster)} sites could wrap the ring at "
                f"privacy.secagg_bits = {self._fixed.bits}; lower privacy.secagg_bits"
            )
        self._threshold = threshold
        self._layout = terms.layout
        self._vector = quantised_vector(terms, self._fixed)
        self._share_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._advertised_roster = roster
        self._roster: list[str] = []
        self._senders: list[str] = []
        self._seed = b""
        self._mask_peers: dict[str, bytes] = {}
        self._share_peers: dict[str, bytes] = {}
        self._own_shares: tuple[int, int] = (0, 0)
        self._sealed: dict[str, bytes] = {}
        self._sent_masked = False
        self._unmasked = False

    def advertise_reply(self) -> Payload:
        """This site's two public keys and its layout."""
        return Payload(
            header={"round": self._rnd, "layout": self._layout.to_json()},
            blobs={
                "share_pk": public_bytes(self._share_key),
                "mask_pk": public_bytes(self._mask_key),
            },
        )

    def share(self, request: Payload) -> Payload:
        """Shamir-share the self-mask seed and the mask key; seal one share pair to each peer."""
        where = self._where + " share stage"
        roster = request.names("roster", where=where)
        if self._site not in roster or len(roster) < self._threshold:
            raise ProtocolError(
                f"{where}: roster of {len(roster)} is below the threshold {self._threshold} "
                "or leaves this site out"
            )
        if not set(roster) <= set(self._advertised_roster):
            raise ProtocolError(f"{where}: the roster names sites outside the advertised one")
        layout = Layout.from_json(request.header.get("layout"), where=where)
        if layout != self._layout:
            raise ProtocolError(f"{where}: the round's layout differs from this site's update")
        for peer in roster:
            self._share_peers[peer] = request.blob(f"share_pk/{peer}", where=where, size=32)
            self._mask_peers[peer] = request.blob(f"mask_pk/{peer}", where=where, size=32)
            load_public(self._mask_peers[peer], where=where)
        if self._mask_peers[self._site] != public_bytes(self._mask_key) or self._share_peers[
            self._site
        ] != public_bytes(self._share_key):
            raise ProtocolError(f"{where}: the relayed keys of this site are not its own")
        self._roster = roster
        seed = os.urandom(shamir.SECRET_BYTES)
        self._seed = seed
        xs = list(range(1, len(roster) + 1))
        b_shares = shamir.split(seed, threshold=self._threshold, xs=xs)
        s_shares = shamir.split(
            self._mask_key.private_bytes_raw(), threshold=self._threshold, xs=xs
        )
        blobs: dict[str, bytes] = {}
        for x, peer in zip(xs, roster, strict=True):
            if peer == self._site:
                self._own_shares = (b_shares[x], s_shares[x])
                continue
            key = agree(
                self._share_key,
                load_public(self._share_peers[peer], where=where),
                purpose="secagg/share",
                rnd=self._rnd,
            )
            plain = json.dumps(
                {"b": _hex(b_shares[x]), "s": _hex(s_shares[x])}, sort_keys=True
            ).encode()
            blobs[f"to/{peer}"] = seal(key, plain, associated=self._ad(self._site, peer))
        return Payload(header={"round": self._rnd}, blobs=blobs)

    def _ad(self, sender: str, recipient: str) -> bytes:
        return f"flmi secagg|{self._rnd}|{sender}|{recipient}".encode()

    def masked(self, request: Payload) -> Payload:
        """Keep the sealed shares addressed here; send the masked vector."""
        where = self._where + " masked stage"
        senders = request.names("roster", where=where)
        if self._site not in senders or len(senders) < self._threshold:
            raise ProtocolError(f"{where}: fewer than {self._threshold} sites shared their keys")
        if not set(senders) <= set(self._roster):
            raise ProtocolError(f"{where}: the roster names sites that never advertised keys")
        for peer in senders:
            if peer != self._site:
                self._sealed[peer] = request.blob(f"from/{peer}", where=where)
        self._senders = senders
        y = self._vector.copy()
        y += mask(self._seed, y.size)
        for peer in senders:
            if peer == self._site:
                continue
            seed = agree(
                self._mask_key,
                load_public(self._mask_peers[peer], where=where),
                purpose="secagg/mask",
                rnd=self._rnd,
            )
            if _sign(self._site, peer):
                y += mask(seed, y.size)
            else:
                y -= mask(seed, y.size)
        self._sent_masked = True
        return Payload(header={"round": self._rnd}, blobs={"y": y.astype("<u8").tobytes()})

    def unmask(self, request: Payload) -> Payload:
        """Reveal b-shares of the survivors and mask-key shares of the dropped, never both."""
        where = self._where + " unmask stage"
        if self._unmasked or not self._sent_masked:
            raise ProtocolError(f"{where}: asked to unmask twice, or before masking")
        survivors = request.names("survivors", where=where)
        dropped = request.names("dropped", where=where)
        if (
            set(survivors) & set(dropped)
            or set(survivors) | set(dropped) != set(self._senders)
            or self._site not in survivors
        ):
            raise ProtocolError(
                f"{where}: survivors and dropped sites must split the sites that shared keys"
            )
        if len(survivors) < self._threshold:
            raise ProtocolError(
                f"{where}: {len(survivors)} survivors are fewer than the threshold "
                f"{self._threshold}; this site will not help unmask"
            )
        self._unmasked = True
        b_out: dict[str, str] = {}
        s_out: dict[str, str] = {}
        for peer in sorted(self._senders):
            if peer == self._site:
                b, s = self._own_shares
            else:
                key = agree(
                    self._share_key,
                    load_public(self._share_peers[peer], where=where),
                    purpose="secagg/share",
                    rnd=self._rnd,
                )
                plain = unseal(
                    key, self._sealed[peer], associated=self._ad(peer, self._site), where=where
                )
                try:
                    shares = json.loads(plain)
                    b = _int(shares["b"], where=where)
                    s = _int(shares["s"], where=where)
                except (KeyError, TypeError, json.JSONDecodeError):
                    raise ProtocolError(f"{where}: a share from '{peer}' is malformed") from None
            if peer in survivors:
                b_out[peer] = _hex(b)
            else:
                s_out[peer] = _hex(s)
        return Payload(header={"round": self._rnd, "b": b_out, "s": s_out})


# --------------------------------------------------------------------------- server side


class SecAggRound:
    """The server's side of one secure aggregation round: a state machine over the stages.

    The server opens one stage at a time with :meth:`requests` and feeds each
    reply to :meth:`receive`; a reply for a stage that is not open (a dropped
    site's late masked vector), of another round, or from a site the stage
    was not sent to is ignored. After the unmask stage, :meth:`result` gives
    the sum, or ``None`` when fewer than ``threshold`` sites survive.

    Parameters
    ----------
    rnd
        The round.
    roster
        The sites that trained and hold an update back.
    threshold
        Shares needed to reconstruct a secret; also the fewest survivors.
    fixed
        The fixed-point encoding.
    rule
        The strategy's linear rule (what each site contributes).
    """

    def __init__(
        self,
        *,
        rnd: int,
        roster: Sequence[str],
        threshold: int,
        fixed: FixedPoint,
        rule: LinearRule,
    ) -> None:
        self.rnd = rnd
        self._roster = sorted(roster)
        self._threshold = threshold
        self._fixed = fixed
        self._rule = rule
        self._open: Stage | None = None
        self._sent_to: set[str] = set()
        self.errors: dict[str, ClientError] = {}
        self.bytes_down = 0
        self.bytes_up = 0
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._layouts: dict[str, Layout] = {}
        self._layout: Layout | None = None
        self._advertised: list[str] = []
        self._sealed: dict[str, dict[str, bytes]] = {}
        self._shared: list[str] = []
        self._masked: dict[str, np.ndarray] = {}
        self._survivors: list[str] = []
        self._dropped: list[str] = []
        self._b_shares: dict[str, dict[int, int]] = {}
        self._s_shares: dict[str, dict[int, int]] = {}
        self._responders: list[str] = []

    @property
    def stage(self) -> Stage | None:
        """The stage now open (``None`` before the first and after the last)."""
        return self._open

    def _fail(self, site: str, code: ErrorCode, message: str) -> None:
        log.warning("secagg round %d: site %s: %s", self.rnd, site, message)
        self.errors.setdefault(site, ClientError(site=site, code=code, message=message))

    def _send(self, stage: Stage, payloads: Mapping[str, Payload]) -> dict[str, bytes]:
        self._open = stage
        self._sent_to = set(payloads)
        out = {site: p.encode() for site, p in sorted(payloads.items())}
        self.bytes_down += sum(len(b) for b in out.values())
        return out

    def requests(self, stage: Stage) -> dict[str, bytes]:
        """Close the open stage and open ``stage``: one payload per site it goes to.

        Stages must come in order; a stage with too few sites left goes to nobody.
        """
        if stage is Stage.ADVERTISE:
            header = {
                "round": self.rnd,
                "roster": self._roster,
                "threshold": self._threshold,
                "clip": self._fixed.clip,
                "bits": self._fixed.bits,
                "rule": self._rule.value,
            }
            return self._send(stage, {s: Payload(header=header) for s in self._roster})
        if stage is Stage.SHARE:
            self._close_advertise()
            if len(self._advertised) < self._threshold or self._layout is None:
                return self._send(stage, {})
            blobs: dict[str, bytes] = {}
            for site in self._advertised:
                blobs[f"share_pk/{site}"], blobs[f"mask_pk/{site}"] = self._keys[site]
            header = {
                "round": self.rnd,
                "roster": self._advertised,
                "layout": self._layout.to_json(),
            }
            return self._send(
                stage, {s: Payload(header=header, blobs=blobs) for s in self._advertised}
            )
        if stage is Stage.MASKED:
            self._shared = sorted(self._sealed)
            if len(self._shared) < self._threshold:
                return self._send(stage, {})
            payloads = {}
            for site in self._shared:
                blobs = {
                    f"from/{sender}": self._sealed[sender][site]
                    for sender in self._shared
                    if sender != site
                }
                payloads[site] = Payload(
                    header={"round": self.rnd, "roster": self._shared}, blobs=blobs
                )
            return self._send(stage, payloads)
        if stage is Stage.UNMASK:
            self._survivors = sorted(self._masked)
            self._dropped = sorted(set(self._shared) - set(self._masked))
            if len(self._survivors) < self._threshold:
                return self._send(stage, {})
            header = {"round": self.rnd, "survivors": self._survivors, "dropped": self._dropped}
            return self._send(stage, {s: Payload(header=header) for s in self._survivors})
        raise ValueError(f"unknown secagg stage {stage!r}")

    def _close_advertise(self) -> None:
        layouts = {s: layout for s, layout in self._layouts.items() if s in self._keys}
        if not layouts:
            return
        counts: dict[Layout, int] = {}
        for layout in layouts.values():
            counts[layout] = counts.get(layout, 0) + 1
        candidates = sorted(counts, key=lambda layout: json.dumps(layout.to_json()))
        agreed = max(candidates, key=counts.__getitem__)  # the most common; ties: first in order
        self._layout = agreed
        for site, layout in sorted(layouts.items()):
            if layout != agreed:
                self._fail(
                    site, ErrorCode.SCHEMA_MISMATCH, "update layout differs from the round's"
                )
        self._advertised = sorted(s for s, layout in layouts.items() if layout == agreed)

    def receive(self, site: str, stage: str, rnd: int, reply: StageReply) -> bool:
        """Take one site's reply to the open stage; ``False`` when it is ignored.

        A reply to a stage that is closed (a late submission), to another
        round, or from a site the stage did not go to is ignored and logged.
        """
        if rnd != self.rnd or stage != self._open or site not in self._sent_to:
            log.warning(
                "secagg round %d: ignored a reply from %s to %s of round %d (stage %s is open)",
                self.rnd,
                site,
                stage,
                rnd,
                self._open,
            )
            return False
        self._sent_to.discard(site)
        if isinstance(reply, ClientError):
            self._fail(site, reply.code, reply.message)
            return True
        self.bytes_up += len(reply)
        where = f"secagg round {self.rnd}: {stage} reply from site '{site}'"
        try:
            payload = Payload.decode(reply, where=where)
            if payload.header.get("round") != self.rnd:
                raise ProtocolError(f"{where}: belongs to another round")
            self._take(site, Stage(stage), payload, where=where)
        except ProtocolError as exc:
            self._fail(site, ErrorCode.PROTOCOL_ERROR, str(exc))
        return True

    def _take(self, site: str, stage: Stage, payload: Payload, *, where: str) -> None:
        if stage is Stage.ADVERTISE:
            share_pk = payload.blob("share_pk", where=where, size=32)
            mask_pk = payload.blob("mask_pk", where=where, size=32)
            load_public(mask_pk, where=where)
            load_public(share_pk, where=where)
            self._layouts[site] = Layout.from_json(payload.header.get("layout"), where=where)
            self._keys[site] = (share_pk, mask_pk)
        elif stage is Stage.SHARE:
            sealed = {
                peer: payload.blob(f"to/{peer}", where=where)
                for peer in self._advertised
                if peer != site
            }
            self._sealed[site] = sealed
        elif stage is Stage.MASKED:
            assert self._layout is not None
            size = self._layout.num_floats + len(SCALARS)
            raw = payload.blob("y", where=where, size=8 * size)
            self._masked[site] = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        else:
            b = payload.field("b", dict, where=where)
            s = payload.field("s", dict, where=where)
            if set(b) != set(self._survivors) or set(s) != set(self._dropped):
                raise ProtocolError(f"{where}: shares do not cover exactly survivors and dropped")
            x = self._advertised.index(site) + 1  # the share point every site used
            for peer, value in b.items():
                self._b_shares.setdefault(peer, {})[x] = _int(value, where=where)
            for peer, value in s.items():
                self._s_shares.setdefault(peer, {})[x] = _int(value, where=where)
            self._responders.append(site)

    def result(self, reference: Params) -> tuple[ClientUpdate | None, int]:
        """Close the unmask stage; the equivalent update and the number of contributors.

        ``(None, 0)`` when fewer than ``threshold`` sites survived masking or
        answered the unmask stage (recovery is refused), or when shares do not
        reconstruct the keys the sites advertised.
        """
        self._open = None
        if len(self._survivors) < self._threshold or len(self._responders) < self._threshold:
            log.warning(
                "secagg round %d: %d survivors and %d unmask answers; threshold %d: "
                "the sum cannot be recovered and no update is aggregated",
                self.rnd,
                len(self._survivors),
                len(self._responders),
                self._threshold,
            )
            return None, 0
        assert self._layout is not None
        try:
            total = self._unmask()
        except (ProtocolError, ValueError) as exc:
            log.warning("secagg round %d: unmasking failed: %s", self.rnd, exc)
            return None, 0
        ints = total.view(np.int64)
        floats = self._layout.num_floats
        weighted = self._fixed.decode(ints[: self._layout.num_weighted])
        unweighted = self._fixed.decode(ints[self._layout.num_weighted : floats])
        n_sum, n_tau_sum, count = (int(v) for v in ints[floats:])
        if count != len(self._survivors):
            log.warning(
                "secagg round %d: recovered count %d is not the survivors'", self.rnd, count
            )
            return None, 0
        update = equivalent_update(
            layout=self._layout,
            weighted_sum=weighted,
            unweighted_sum=unweighted,
            n_sum=n_sum,
            n_tau_sum=n_tau_sum,
            rule=self._rule,
            reference=reference,
            site=AGGREGATE_SITE,
        )
        return update, count

    def _unmask(self) -> np.ndarray:
        total = np.zeros_like(next(iter(self._masked.values())))
        for site in self._survivors:
            total += self._masked[site]
        size = total.size
        for site in self._survivors:
            seed = shamir.combine(self._b_shares.get(site, {}), threshold=self._threshold)
            total -= mask(seed, size)
        for gone in self._dropped:
            raw = shamir.combine(self._s_shares.get(gone, {}), threshold=self._threshold)
            key = X25519PrivateKey.from_private_bytes(raw)
            if public_bytes(key) != self._keys[gone][1]:
                raise ProtocolError(f"the shares of dropped site '{gone}' give the wrong mask key")
            for site in self._survivors:
                seed = agree(
                    key,
                    load_public(self._keys[site][1], where="unmask"),
                    purpose="secagg/mask",
                    rnd=self.rnd,
                )
                # ``site`` added the mask it shares with ``gone`` if site < gone.
                if _sign(site, gone):
                    total -= mask(seed, size)
                else:
                    total += mask(seed, size)
        return total


class SecAggServer:
    """Secure aggregation's server side, driven by the federation loop each round.

    Parameters
    ----------
    threshold
        Shares needed to reconstruct a secret and the fewest survivors; ``0``
        takes a strict majority of each round's roster.
    fixed
        The fixed-point encoding (``privacy.secagg_clip``, ``privacy.secagg_bits``).
    rule
        The strategy's linear rule.
    """

    def __init__(self, *, threshold: int, fixed: FixedPoint, rule: LinearRule) -> None:
        if threshold < 0:
            raise ValueError(f"privacy.secagg_threshold must not be negative, got {threshold}")
        self._threshold = threshold
        self._fixed = fixed
        self._rule = rule

    @property
    def name(self) -> str:
        """``"secagg"``."""
        return "secagg"

    def threshold_for(self, roster: int) -> int:
        """The threshold a round with ``roster`` sites uses."""
        return self._threshold if self._threshold else roster // 2 + 1

    def aggregate(
        self,
        *,
        rnd: int,
        exchange: StagedExchange,
        replies: Mapping[str, TrainReply],
        reference: Params,
    ) -> SecureRound:
        """Run the four stages with the sites that trained, and recover their sum."""
        errors: dict[str, ClientError] = {}
        roster: list[str] = []
        for site, reply in sorted(replies.items()):
            if isinstance(reply, ClientError):
                errors[site] = reply
            elif held_back(reply):
                roster.append(site)
            else:
                errors[site] = ClientError(
                    site=site,
                    code=ErrorCode.REJECTED_BY_SERVER,
                    message="sent its update in the clear under secure aggregation; discarded",
                )
        threshold = self.threshold_for(len(roster))
        state = SecAggRound(
            rnd=rnd, roster=roster, threshold=threshold, fixed=self._fixed, rule=self._rule
        )
        update: ClientUpdate | None = None
        count = 0
        if len(roster) >= max(2, threshold):
            drive(state, exchange)
            update, count = state.result(reference)
        else:
            log.warning(
                "secagg round %d: %d sites hold an update; the threshold is %d (and at least "
                "2 are needed): no update is aggregated this round",
                rnd,
                len(roster),
                threshold,
            )
        errors.update(state.errors)
        return SecureRound(
            update=update,
            contributors=count,
            errors=errors,
            bytes_down=state.bytes_down,
            bytes_up=state.bytes_up,
        )


def drive(state: SecAggRound, exchange: StagedExchange) -> None:
    """Run every stage of ``state`` through ``exchange``, in order."""
    for stage in Stage:
        payloads = state.requests(stage)
        if not payloads:
            continue
        for site, reply in sorted(
            exchange.exchange(stage=stage, rnd=state.rnd, payloads=payloads).items()
        ):
            state.receive(site, stage, state.rnd, reply)
