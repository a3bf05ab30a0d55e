"""Top-k sparsification: each tensor's largest-magnitude ``fraction`` of values, by index."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from flmi.compression.base import require_parts
from flmi.compression.payload import Compressed
from flmi.core.errors import SchemaError
from flmi.core.params import Params


def index_dtype(size: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned integer type that indexes ``size`` values."""
    return np.uint16 if size <= 2**16 else np.uint32


class TopK:
    """Keep ``ceil(fraction * n)`` values of each ``n``-value tensor (at least one).

    Sent as indices (16-bit where the tensor has at most 65536 values, else
    32-bit) and float32 values. Biased on its own: use it with error feedback.

    Parameters
    ----------
    fraction
        Share of each tensor's values kept, in (0, 1].
    """

    method = "topk"

    def __init__(self, *, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise SchemaError(f"compression.fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def encode(
        self, *, update: Mapping[str, np.ndarray], state: Params, rng: np.random.Generator
    ) -> tuple[Compressed, Params]:
        """Select each tensor's top values; the codec keeps no state."""
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(update):
            x = np.asarray(update[name], dtype=np.float32).ravel()
            k = min(x.size, max(1, math.ceil(self.fraction * x.size)))
            idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :]) if x.size else x
            arrays[f"{name}/index"] = np.asarray(idx, dtype=index_dtype(x.size))
            arrays[f"{name}/value"] = x[np.asarray(idx, dtype=np.int64)]
        return Compressed(method=self.method, arrays=arrays), {}

    def decode(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """Scatter the kept values into zeros."""
        out: Params = {}
        for name, ref in like.items():
            index, value = require_parts(payload, name, ("index", "value"))
            index = index.astype(np.int64)
            if index.shape != value.shape or (index.size and (index.max() >= ref.size)):
                raise SchemaError(f"compressed '{name}' has indices outside its {ref.shape}")
            dense = np.zeros(ref.size, dtype=np.float32)
            dense[index] = value
            out[name] = dense.reshape(ref.shape).astype(ref.dtype)
        return out
