"""Seeds derived per (seed, party, round), so every runtime draws the same numbers."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*, seed: int, party: str, rnd: int, purpose: str = "") -> int:
    """A 63-bit seed for one party in one round, stable across processes and machines.

    Python's ``hash`` is salted per process, so this uses SHA-256 instead.
    """
    text = f"{seed}|{party}|{rnd}|{purpose}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def generator(*, seed: int, party: str, rnd: int, purpose: str = "") -> np.random.Generator:
    """A numpy generator for one (seed, party, round, purpose)."""
    return np.random.default_rng(derive_seed(seed=seed, party=party, rnd=rnd, purpose=purpose))
