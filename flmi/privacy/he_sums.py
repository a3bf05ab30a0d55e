"""Signed sums for homomorphic aggregation: what sites sign and what the key holder checks.

A contribution is an :class:`Entry` (a site and the SHA-256 of its
ciphertext); a sum is signed by every listed site over
:func:`attestation` (the context, the round, the sorted entries and the
SHA-256 of the homomorphic sum, which each site recomputes with
:func:`add_ciphertexts`). :class:`SignedSum` is what the server holds after
the signatures, and what it asks the key holder to decrypt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import tenseal as ts

from flmi.privacy.identity import Authority, SiteCredential
from flmi.privacy.linear import SCALARS, Layout
from flmi.privacy.wire import Payload, ProtocolError


@dataclass(frozen=True)
class HETrust:
    """What a site believes under homomorphic aggregation, from its own configuration.

    Parameters
    ----------
    credential
        The site's certificate and key (it signs with them).
    authority
        The consortium CA that vouches for every site's identity.
    key_holder
        The site that holds the secret key (``privacy.he_key_holder``).
    min_contributions
        ``t``: fewest distinct sites of a round whose signed sum is decrypted
        (``privacy.he_min_contributions``), at least 2.
    """

    credential: SiteCredential
    authority: Authority
    key_holder: str
    min_contributions: int

    def __post_init__(self) -> None:
        if self.min_contributions < 2:
            raise ValueError(
                f"privacy.he_min_contributions must be at least 2, got {self.min_contributions}"
            )


@dataclass(frozen=True, order=True)
class Entry:
    """One contribution to a sum: the site and the SHA-256 (hex) of its ciphertext."""

    site: str
    digest: str


def digest(blobs: Mapping[str, bytes]) -> str:
    """The SHA-256 (hex) of named ciphertext chunks, names and lengths included."""
    h = hashlib.sha256()
    for name in sorted(blobs):
        h.update(f"{name}|{len(blobs[name])}|".encode())
        h.update(blobs[name])
    return h.hexdigest()


def entries_to_wire(entries: Sequence[Entry]) -> list[list[str]]:
    """Entries as a payload header carries them."""
    return [[e.site, e.digest] for e in entries]


def entries_from(request: Payload, *, where: str) -> list[Entry]:
    """The sorted entries of ``request``'s header; a site listed twice is refused."""
    value = request.field("entries", list, where=where)
    if not all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in value
    ):
        raise ProtocolError(f"{where}: header field 'entries' is not a list of [site, digest]")
    entries = sorted(Entry(site=e[0], digest=e[1]) for e in value)
    sites = [e.site for e in entries]
    if len(set(sites)) != len(sites):
        raise ProtocolError(f"{where}: a site is listed twice in the sum (one signer, one entry)")
    return entries


def attestation(*, key_id: str, rnd: int, entries: Sequence[Entry], sum_digest: str) -> bytes:
    """What a site signs: the context, the round, the listed contributions and the sum."""
    listed = ";".join(f"{e.site}={e.digest}" for e in sorted(entries))
    return f"flmi he sum|{key_id}|{rnd}|{listed}|{sum_digest}".encode()


def context_message(holder: str, key_id: str) -> bytes:
    """What the key holder signs: its name and the SHA-256 (hex) of the public context."""
    return f"flmi he context|{holder}|{key_id}".encode()


def part_prefix(index: int) -> str:
    """The blob-name prefix of the ``index``-th listed ciphertext in an attest request."""
    return f"part/{index:04d}/"


def add_ciphertexts(
    context: ts.Context, parts: Sequence[Mapping[str, bytes]], *, where: str
) -> dict[str, bytes]:
    """The chunk-wise homomorphic sum of ``parts`` in the given order (deterministic bytes)."""
    if not parts:
        raise ProtocolError(f"{where}: nothing to add")
    names = sorted(parts[0])
    total: list[ts.CKKSVector] | None = None
    for part in parts:
        if sorted(part) != names:
            raise ProtocolError(f"{where}: the ciphertexts hold different chunks")
        try:
            vectors = [ts.ckks_vector_from(context, part[name]) for name in names]
        except Exception as exc:
            raise ProtocolError(f"{where}: not CKKS ciphertexts ({exc})") from None
        total = vectors if total is None else [a + b for a, b in zip(total, vectors, strict=True)]
    assert total is not None
    return {name: v.serialize() for name, v in zip(names, total, strict=True)}


@dataclass(frozen=True)
class SignedSum:
    """A round's sum under the public context, with the listed sites' signatures of it.

    Parameters
    ----------
    rnd
        The round.
    entries
        The contributions the sum holds.
    chunks
        The summed ciphertext chunks.
    signatures
        Each listed site's signature of (context, round, entries, sum).
    layout
        The layout of the summed terms.
    parts
        Each listed site's ciphertext chunks (the server keeps them only to
        build the sum; they never go to the key holder).
    """

    rnd: int
    entries: list[Entry]
    chunks: dict[str, bytes]
    signatures: dict[str, bytes]
    layout: Layout
    parts: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Values the decrypted sum holds."""
        return self.layout.num_floats + len(SCALARS)

    def decrypt_request(self) -> Payload:
        """What the key holder is asked to decrypt."""
        blobs = dict(self.chunks)
        blobs.update({f"sig/{s}": sig for s, sig in self.signatures.items()})
        return Payload(
            header={"round": self.rnd, "entries": entries_to_wire(self.entries), "size": self.size},
            blobs=blobs,
        )
