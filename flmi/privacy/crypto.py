"""The cryptographic building blocks, all from ``cryptography``; no cipher is written here.

* key agreement: X25519;
* key derivation: HKDF-SHA256, bound to a purpose and a round;
* pseudo-random masks: the ChaCha20 keystream under a derived key, read as
  little-endian ``uint64`` words (vectorised: one call per mask, no Python
  loop over parameters);
* authenticated encryption between two sites: ChaCha20-Poly1305 under a key
  derived from their X25519 agreement, with the sender, the recipient and the
  round as associated data.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flmi.privacy.wire import ProtocolError

KEY_BYTES = 32
NONCE_BYTES = 12
_ZERO_NONCE = bytes(16)  # ChaCha20's 16-byte nonce (counter + nonce); every key is used once


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public(data: bytes, *, where: str) -> X25519PublicKey:
    """A peer's X25519 public key from its 32 raw bytes."""
    if len(data) != KEY_BYTES:
        raise ProtocolError(f"{where}: a public key has {len(data)} bytes, expected {KEY_BYTES}")
    return X25519PublicKey.from_public_bytes(data)


def derive_key(shared: bytes, *, purpose: str, rnd: int) -> bytes:
    """A 32-byte key for ``purpose`` in round ``rnd`` from shared secret material (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=rnd.to_bytes(8, "big"),
        info=f"flmi/{purpose}".encode(),
    ).derive(shared)


def agree(private: X25519PrivateKey, peer: X25519PublicKey, *, purpose: str, rnd: int) -> bytes:
    """The key two sites share for ``purpose`` in round ``rnd`` (X25519, then HKDF)."""
    return derive_key(private.exchange(peer), purpose=purpose, rnd=rnd)


def mask(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random ``uint64`` words: the ChaCha20 keystream under ``seed``.

    The same seed always gives the same words, on every machine (little-endian).
    """
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a mask seed has {KEY_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * size))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)


def seal(key: bytes, plaintext: bytes, *, associated: bytes) -> bytes:
    """``nonce || ChaCha20-Poly1305(key, plaintext)``, bound to ``associated``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, sealed: bytes, *, associated: bytes, where: str) -> bytes:
    """Open what :func:`seal` wrote; a forged or misaddressed message is a ProtocolError."""
    if len(sealed) < NONCE_BYTES + 16:
        raise ProtocolError(f"{where}: sealed message of {len(sealed)} bytes is truncated")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise ProtocolError(f"{where}: sealed message fails authentication") from None
