"""What a hostile server asks the key holder to decrypt, built from an honest round's material.

The server runs a round honestly up to the signatures (it then holds every
listed ciphertext, the signatures of the sum and the public context) and
builds decryption requests that an honest server would never send. Shared by
the in-process tests and the hostile gRPC server process.
"""

from __future__ import annotations

import tenseal as ts

from flmi.privacy.he_sums import Entry, SignedSum, digest, entries_to_wire
from flmi.privacy.wire import Payload


def _request(
    rnd: int,
    entries: list[Entry],
    chunks: dict[str, bytes],
    signatures: dict[str, bytes],
    size: int,
) -> Payload:
    blobs = dict(chunks)
    blobs.update({f"sig/{site}": sig for site, sig in signatures.items()})
    return Payload(
        header={"round": rnd, "entries": entries_to_wire(entries), "size": size}, blobs=blobs
    )


def single(signed: SignedSum) -> Payload:
    """One site's own ciphertext as "the sum", with that site's (genuine) signature."""
    entry = signed.entries[0]
    return _request(
        signed.rnd,
        [entry],
        signed.parts[entry.site],
        {entry.site: signed.signatures[entry.site]},
        signed.size,
    )


def forged(signed: SignedSum, public: ts.Context) -> Payload:
    """Every contribution but the first replaced by a server-made encryption of zero.

    The "sum" is then the first site's ciphertext alone; the signatures are
    the sites' genuine ones (of the honest list).
    """
    first = signed.entries[0]
    entries = [first]
    total = {n: ts.ckks_vector_from(public, b) for n, b in signed.parts[first.site].items()}
    for entry in signed.entries[1:]:
        zero = {}
        for name, data in signed.parts[entry.site].items():
            size = ts.ckks_vector_from(public, data).size()
            zero[name] = ts.ckks_vector(public, [0.0] * size).serialize()
        entries.append(Entry(site=entry.site, digest=digest(zero)))
        total = {n: v + ts.ckks_vector_from(public, zero[n]) for n, v in total.items()}
    chunks = {n: v.serialize() for n, v in total.items()}
    return _request(signed.rnd, entries, chunks, dict(signed.signatures), signed.size)


def wrong_sum(signed: SignedSum) -> Payload:
    """The honest list and its signatures, but the first site's ciphertext as the sum."""
    return _request(
        signed.rnd,
        list(signed.entries),
        signed.parts[signed.entries[0].site],
        dict(signed.signatures),
        signed.size,
    )


def duplicated(signed: SignedSum) -> Payload:
    """The first site listed as often as there are contributions (one signer counted many times)."""
    first = signed.entries[0]
    request = _request(
        signed.rnd,
        [first],
        signed.chunks,
        {first.site: signed.signatures[first.site]},
        signed.size,
    )
    header = dict(request.header)
    header["entries"] = entries_to_wire([first] * len(signed.entries))
    return Payload(header=header, blobs=request.blobs)


def restamped(signed: SignedSum, rnd: int) -> Payload:
    """An honest request of one round, presented as round ``rnd``'s."""
    request = signed.decrypt_request()
    return Payload(header={**request.header, "round": rnd}, blobs=request.blobs)
