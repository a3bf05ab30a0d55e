"""QSGD-style stochastic quantisation (Alistarh et al. 2017) with a per-tensor scale.

Each tensor ``x`` is scaled by ``s = max |x|`` onto ``[-L, L]`` with
``L = 2**(bits - 1) - 1`` levels a side (127, 7 or 1), and each value is
rounded down or up at random with the probability that makes the rounding
unbiased: ``E[decode(encode(x))] = x``, and every value is off by less than
``s / L``. Levels are packed ``8 // bits`` to a byte. The encoding is linear
in expectation, so secure aggregation may sum dequantised values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from flmi.compression.base import NAMES, payload_names
from flmi.compression.payload import Compressed
from flmi.core.errors import SchemaError
from flmi.core.params import Params

BITS = (8, 4, 2)


def levels(bits: int) -> int:
    """Levels on each side of zero for ``bits``-bit signed quantisation."""
    return int(2 ** (bits - 1) - 1)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-bit codes, ``8 // bits`` to a byte, low bits first."""
    flat = codes.astype(np.uint8).ravel()
    per = 8 // bits
    padded = np.zeros(-(-flat.size // per) * per, dtype=np.uint8)
    padded[: flat.size] = flat
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= (groups[:, j] << np.uint8(bits * j)).astype(np.uint8)
    return out


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` codes."""
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    groups = np.stack([(packed >> np.uint8(bits * j)) & mask for j in range(per)], axis=1)
    return groups.ravel()[:count]


class Quantize:
    """Stochastic ``bits``-bit quantisation, one scale per tensor.

    Parameters
    ----------
    bits
        8, 4 or 2.
    """

    method = "quantize"

    def __init__(self, *, bits: int) -> None:
        if bits not in BITS:
            raise SchemaError(f"compression.bits must be 8, 4 or 2, got {bits}")
        self.bits = bits

    def encode(
        self, *, update: Mapping[str, np.ndarray], state: Params, rng: np.random.Generator
    ) -> tuple[Compressed, Params]:
        """Quantise every tensor into one packed code vector; the codec keeps no state."""
        lv = levels(self.bits)
        names = sorted(update)
        codes, scales = [], []
        for name in names:
            x = np.asarray(update[name], dtype=np.float64).ravel()
            scale = float(np.max(np.abs(x))) if x.size else 0.0
            if not np.isfinite(scale):
                raise SchemaError(f"cannot quantise '{name}': it holds non-finite values")
            y = x / scale * lv if scale > 0 else np.zeros_like(x)
            low = np.floor(y)
            q = np.clip(low + (rng.random(x.size) < (y - low)), -lv, lv)
            codes.append(pack((q + lv).astype(np.uint8), self.bits))
            scales.append(scale)
        arrays = {
            "codes": np.concatenate(codes) if codes else np.zeros(0, np.uint8),
            "scales": np.array(scales, dtype=np.float32),
        }
        meta = {"bits": str(self.bits), NAMES: json.dumps(names)}
        return Compressed(method=self.method, arrays=arrays, meta=meta), {}

    def decode(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """Dequantise: ``(code - L) * scale / L``."""
        bits = int(payload.meta.get("bits", "0"))
        if bits != self.bits:
            raise SchemaError(f"a {bits}-bit update reached a {self.bits}-bit decoder")
        lv, per = levels(bits), 8 // bits
        names = payload_names(payload)
        codes, scales = payload.arrays.get("codes"), payload.arrays.get("scales")
        if codes is None or scales is None or scales.shape != (len(names),):
            raise SchemaError("a quantised update needs 'codes' and one scale per tensor")
        out: Params = {}
        offset = 0
        for i, name in enumerate(names):
            if name not in like:
                raise SchemaError(f"quantised update names tensor '{name}', which was not sent")
            ref = like[name]
            size = -(-ref.size // per)
            if offset + size > codes.size:
                raise SchemaError(f"compressed '{name}' holds too few codes for {ref.shape}")
            q = unpack(codes[offset : offset + size], bits, ref.size).astype(np.float64) - lv
            offset += size
            out[name] = (q * (float(scales[i]) / lv)).reshape(ref.shape).astype(ref.dtype)
        return out
