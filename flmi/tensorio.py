"""Atomic tensor files: ``safetensors`` plus a JSON sidecar. Nothing is pickled."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from flmi.core.errors import DataError
from flmi.core.params import Params


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(*, path: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``path`` (safetensors) and ``path.with_suffix('.json')`` (the sidecar), atomically.

    The tensors go first; the sidecar, written last, records their SHA-free
    schema, so a sidecar always describes a complete tensor file.
    """
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write_bytes(path, save(contiguous))
    sidecar = {
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype)}
            for k, v in sorted(contiguous.items())
        },
        "meta": dict(meta),
    }
    atomic_write_json(path.with_suffix(".json"), sidecar)


def load_tensors(*, path: Path) -> tuple[Params, dict[str, Any]]:
    """Read a file written by :func:`save_tensors`: tensors and the sidecar's ``meta``."""
    sidecar_path = path.with_suffix(".json")
    for p in (path, sidecar_path):
        if not p.is_file():
            raise DataError(f"no such file: {p}")
    try:
        tensors = dict(load_file(str(path)))
        sidecar = json.loads(sidecar_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read tensor file {path}: {exc}") from None
    meta = sidecar.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"{sidecar_path}: 'meta' must be a JSON object")
    return tensors, meta
