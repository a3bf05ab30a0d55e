"""The compressed form of an update: typed arrays plus string metadata, as safetensors bytes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from flmi.core.errors import SchemaError


@dataclass(frozen=True)
class Compressed:
    """One compressed update.

    Parameters
    ----------
    method
        The compressor that made it (``"quantize"``, ``"topk"``, ...).
    arrays
        Typed arrays, named ``"TENSOR/PART"`` (for example ``"fc.weight/q"``).
    meta
        Small string metadata (shapes, bit widths); travels in the
        safetensors header.
    """

    method: str
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The safetensors serialisation that travels (method and meta in its header)."""
        header = {"flmi.method": self.method, **{f"m.{k}": v for k, v in self.meta.items()}}
        contiguous = {k: np.ascontiguousarray(v) for k, v in self.arrays.items()}
        return bytes(save(contiguous, metadata=header))

    @classmethod
    def from_bytes(cls, data: bytes) -> Compressed:
        """Read :meth:`to_bytes` output; a malformed payload is a :class:`SchemaError`."""
        try:
            arrays = load(data)
            header = _header_metadata(data)
        except (SafetensorError, ValueError) as err:
            raise SchemaError(f"a compressed update is not valid safetensors: {err}") from err
        method = header.pop("flmi.method", "")
        if not method:
            raise SchemaError("a compressed update names no compression method")
        meta = {k[2:]: v for k, v in header.items() if k.startswith("m.")}
        return cls(method=method, arrays=arrays, meta=meta)


def _header_metadata(data: bytes) -> dict[str, str]:
    import json

    if len(data) < 8:
        raise ValueError("payload shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("safetensors metadata must map strings to strings")
    return dict(meta)


def wire_bytes(payload: Compressed) -> int:
    """The bytes the payload takes on the wire: the length of its serialisation."""
    return len(payload.to_bytes())
