"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Arithmetic on Python integers; the coefficients come from the operating
system's random source. Share ``i`` is the polynomial at ``x = i`` (``i >= 1``);
any ``threshold`` shares give the secret back, fewer say nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

#: The Mersenne prime 2^521 - 1: larger than any 32-byte secret.
PRIME = (1 << 521) - 1
SECRET_BYTES = 32


def split(secret: bytes, *, threshold: int, xs: list[int]) -> dict[int, int]:
    """Shares of ``secret`` at the points ``xs``, any ``threshold`` of which recover it.

    Raises
    ------
    ValueError
        A threshold below 1 or above the number of shares, a point below 1, or
        a secret of the wrong length.
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a shared secret has {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in 1..{len(xs)} (the number of shares)")
    if len(set(xs)) != len(xs) or min(xs) < 1:
        raise ValueError("share points must be distinct and at least 1")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares: dict[int, int] = {}
    for x in xs:
        value = 0
        for c in reversed(coefficients):  # Horner's rule
            value = (value * x + c) % PRIME
        shares[x] = value
    return shares


def combine(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0).

    Raises
    ------
    ValueError
        Fewer shares than ``threshold``, or a share outside the field.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a secret of threshold {threshold}")
    points = sorted(shares.items())[:threshold]
    for x, y in points:
        if not (1 <= x < PRIME and 0 <= y < PRIME):
            raise ValueError(f"share ({x}, ...) lies outside the field")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ValueError("the shares do not combine to a 32-byte secret (wrong or forged shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
