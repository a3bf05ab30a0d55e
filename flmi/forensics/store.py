"""Content-addressed tensor files: a safetensors file named by the SHA-256 of its bytes.

The same tensors always give the same bytes and so the same name: a blob is
written once however many rounds or sites hold it, and a file whose bytes no
longer match its name is refused on reading. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save

from flmi.core.errors import DataError
from flmi.core.params import Params
from flmi.tensorio import atomic_write_bytes

#: The folder of a run directory that holds the record.
RECORD = "record"
#: Where blobs live inside the record.
BLOBS = "blobs"
SUFFIX = ".safetensors"


class BlobStore:
    """Tensor files under ``root/blobs``, each named ``<sha256>.safetensors``.

    Parameters
    ----------
    root
        The record folder (``RUN_DIR/record``).
    """

    def __init__(self, *, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives."""
        return self.root / BLOBS / f"{sha256}{SUFFIX}"

    def put(self, tensors: Mapping[str, np.ndarray]) -> str:
        """Store ``tensors`` (if not stored yet) and return their SHA-256."""
        data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.is_file():
            atomic_write_bytes(target, data)
        return digest

    def get(self, sha256: str) -> Params:
        """The tensors of blob ``sha256``, checked against their name.

        Raises
        ------
        DataError
            The blob is missing, or its bytes do not hash to its name.
        """
        target = self.path(sha256)
        if not target.is_file():
            raise DataError(f"the record is missing blob {target}; the run directory is incomplete")
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DataError(
                f"blob {target} does not hash to its name: the record was altered or corrupted"
            )
        return dict(load(data))
