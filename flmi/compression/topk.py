"""Top-k sparsification: each tensor's largest-magnitude ``fraction`` of values, by index."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from flmi.compression.base import NAMES, payload_names
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
        """Select each tensor's top values, all in one index and one value vector."""
        names = sorted(update)
        largest = max((int(np.size(update[n])) for n in names), default=0)
        indices, values, counts = [], [], []
        for name in names:
            x = np.asarray(update[name], dtype=np.float32).ravel()
            k = min(x.size, max(1, math.ceil(self.fraction * x.size)))
            idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :])
            indices.append(idx)
            values.append(x[idx])
            counts.append(int(idx.size))
        arrays = {
            "index": np.concatenate(indices).astype(index_dtype(largest))
            if indices
            else np.zeros(0, np.uint16),
            "value": np.concatenate(values) if values else np.zeros(0, np.float32),
        }
        meta = {NAMES: json.dumps(names), "counts": json.dumps(counts)}
        return Compressed(method=self.method, arrays=arrays, meta=meta), {}

    def decode(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """Scatter the kept values into zeros."""
        names = payload_names(payload)
        try:
            counts = [int(c) for c in json.loads(payload.meta.get("counts", ""))]
        except (ValueError, TypeError) as err:
            raise SchemaError("a top-k update does not list its counts") from err
        index, value = payload.arrays.get("index"), payload.arrays.get("value")
        if (
            index is None
            or value is None
            or len(counts) != len(names)
            or index.shape != value.shape
            or sum(counts) != index.size
        ):
            raise SchemaError("a top-k update needs one index per value and one count per tensor")
        out: Params = {}
        offset = 0
        for name, count in zip(names, counts, strict=True):
            if name not in like:
                raise SchemaError(f"top-k update names tensor '{name}', which was not sent")
            ref = like[name]
            idx = index[offset : offset + count].astype(np.int64)
            if idx.size and (idx.max() >= ref.size or idx.min() < 0):
                raise SchemaError(f"compressed '{name}' has indices outside its {ref.shape}")
            dense = np.zeros(ref.size, dtype=np.float32)
            dense[idx] = value[offset : offset + count]
            offset += count
            out[name] = dense.reshape(ref.shape).astype(ref.dtype)
        return out
