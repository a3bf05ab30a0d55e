"""PowerSGD (Vogels et al. 2019): a rank-``r`` approximation by one power iteration a round.

Each tensor of two or more axes is viewed as a matrix ``M`` (first axis by
the rest). With the previous round's ``Q`` (warm start, kept in the state as
``q/NAME``): ``P = orth(M Q)``, ``Q' = M^T P``, and ``P Q'^T`` is sent as
``P`` and ``Q'``. Tensors too small to gain (vectors, or matrices with a side
no longer than the rank) are sent whole. Biased: use it with error feedback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from flmi.compression.base import NAMES, payload_names, require_parts
from flmi.compression.payload import Compressed
from flmi.core.errors import SchemaError
from flmi.core.params import Params

#: Prefix of the warm-start factors in the state.
WARM = "q/"


def _compressible(shape: tuple[int, ...], rank: int) -> bool:
    if len(shape) < 2:
        return False
    rows, cols = shape[0], int(np.prod(shape[1:]))
    return (rows + cols) * rank < rows * cols


class PowerSGD:
    """Rank-``rank`` power-iteration compression.

    Parameters
    ----------
    rank
        The approximation's rank, at least 1.
    """

    method = "powersgd"

    def __init__(self, *, rank: int) -> None:
        if rank < 1:
            raise SchemaError(f"compression.rank must be at least 1, got {rank}")
        self.rank = rank

    def encode(
        self, *, update: Mapping[str, np.ndarray], state: Params, rng: np.random.Generator
    ) -> tuple[Compressed, Params]:
        """One power iteration per matrix; the new ``Q`` factors are the next state."""
        arrays: dict[str, np.ndarray] = {}
        new_state: Params = {}
        for name in sorted(update):
            x = np.asarray(update[name], dtype=np.float32)
            if not _compressible(x.shape, self.rank):
                arrays[f"{name}/full"] = x.ravel()
                continue
            m = x.reshape(x.shape[0], -1).astype(np.float64)
            q = state.get(WARM + name)
            if q is None or q.shape != (m.shape[1], self.rank):
                q = rng.standard_normal((m.shape[1], self.rank))
            p, _ = np.linalg.qr(m @ q.astype(np.float64))
            q_new = m.T @ p
            arrays[f"{name}/p"] = p.astype(np.float32)
            arrays[f"{name}/q"] = q_new.astype(np.float32)
            new_state[WARM + name] = q_new.astype(np.float32)
        meta = {"rank": str(self.rank), NAMES: json.dumps(sorted(update))}
        return Compressed(method=self.method, arrays=arrays, meta=meta), new_state

    def decode(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """``P Q^T`` for each matrix, the tensor itself for the rest."""
        out: Params = {}
        for name in payload_names(payload):
            if name not in like:
                raise SchemaError(f"PowerSGD update names tensor '{name}', which was not sent")
            ref = like[name]
            if f"{name}/full" in payload.arrays:
                (full,) = require_parts(payload, name, ("full",))
                if full.size != ref.size:
                    raise SchemaError(f"compressed '{name}' has {full.size} values, not {ref.size}")
                out[name] = full.reshape(ref.shape).astype(ref.dtype)
                continue
            p, q = require_parts(payload, name, ("p", "q"))
            rows, cols = ref.shape[0], ref.size // max(ref.shape[0], 1)
            if p.ndim != 2 or q.ndim != 2 or p.shape[0] != rows or q.shape[0] != cols:
                raise SchemaError(f"compressed '{name}' factors do not fit {ref.shape}")
            out[name] = (
                (p.astype(np.float64) @ q.astype(np.float64).T).reshape(ref.shape).astype(ref.dtype)
            )
        return out
