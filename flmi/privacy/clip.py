"""Clipping an update to an L2 bound and adding Gaussian noise (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from flmi.core.params import Params


def global_norm(params: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all tensors together, accumulated in float64 in name order."""
    total = 0.0
    for name in sorted(params):
        value = np.asarray(params[name], dtype=np.float64)
        total += float(np.dot(value.ravel(), value.ravel()))
    return math.sqrt(total)


def clip_to_norm(params: Mapping[str, np.ndarray], clip_norm: float) -> tuple[Params, float]:
    """``params`` scaled by ``min(1, clip_norm / norm)``, and the norm before clipping.

    The result, taken as one vector, has an L2 norm of at most ``clip_norm``
    (computed in float64; each tensor keeps its dtype).
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm}")
    norm = global_norm(params)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    clipped = {
        k: (np.asarray(params[k], dtype=np.float64) * scale).astype(params[k].dtype, copy=False)
        for k in sorted(params)
    }
    return clipped, norm


def gaussian_noise(
    like: Mapping[str, np.ndarray], *, std: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Independent N(0, std^2) noise shaped like ``like``, in float64, drawn in name order."""
    if std < 0:
        raise ValueError(f"noise std must not be negative, got {std}")
    return {k: rng.normal(0.0, std, size=np.shape(like[k])) for k in sorted(like)}


def update_noise_multiplier(*, noise_multiplier: float, count_noise: float | None) -> float:
    """The noise multiplier left for the update when a clipped count is also noised.

    Andrew et al., "Differentially Private Learning with Adaptive Clipping",
    NeurIPS 2021, Thm. 1: the update's noise ``z_u`` and the count's noise
    ``sigma_b`` together cost as much as one Gaussian mechanism with
    ``z = (z_u^-2 + (2 sigma_b)^-2)^-1/2``; so ``z_u = (z^-2 - (2 sigma_b)^-2)^-1/2``.
    """
    if count_noise is None:
        return noise_multiplier
    rest = noise_multiplier**-2 - (2.0 * count_noise) ** -2
    if rest <= 0:
        raise ValueError(
            f"noise_multiplier {noise_multiplier} leaves no budget for the update once the "
            f"count is noised with std {count_noise}; it must be below {2 * count_noise}"
        )
    return float(rest**-0.5)
