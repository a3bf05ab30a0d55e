"""Seeded strong augmentation for consistency training (FixMatch's strong view).

FixMatch (Sohn et al., NeurIPS 2020) asks a model to predict, on a heavily
distorted image, the label it gives confidently to a lightly distorted view of
the same image. RandAugment's colour operations assume RGB photographs; for
grey medical images the distortions here are the ones scanners and sites
actually vary in: intensity scale and offset (contrast, brightness), gamma,
noise, and a larger geometric jitter, plus a cut-out patch. Every draw comes
from the site's per-round generator, so a round is reproducible.
"""

from __future__ import annotations

import torch

from flmi.tasks.augment import random_flip_shift

MAX_SHIFT = 0.2
MAX_ROTATE_DEG = 25.0
CONTRAST = (0.6, 1.4)
BRIGHTNESS = 0.15
GAMMA = (0.7, 1.4)
NOISE_STD = 0.05
CUTOUT_FRACTION = 0.4


def _per_image(n: int, dims: int, values: torch.Tensor) -> torch.Tensor:
    """Reshape ``(N,)`` values to broadcast over ``(N, C, *spatial)``."""
    return values.reshape(n, *([1] * (dims + 1)))


def strong_augment(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """A strongly distorted view of each image of the batch.

    Parameters
    ----------
    x
        A batch ``(N, C, H, W)`` or ``(N, C, D, H, W)`` with intensities roughly in ``[0, 1]``.
    generator
        The site's per-round generator (CPU).

    Returns
    -------
    torch.Tensor
        Same shape and dtype: flip, rotation (2D) and shift, then per image a
        random contrast, brightness and gamma, Gaussian noise, and one square
        (cube) patch of up to ``CUTOUT_FRACTION`` of the side set to the
        image's mean.
    """
    n, dims = x.shape[0], x.dim() - 2
    out = random_flip_shift(
        x, generator=generator, max_shift=MAX_SHIFT, max_rotate_deg=MAX_ROTATE_DEG
    )

    def uniform(low: float, high: float) -> torch.Tensor:
        draw = torch.rand(n, generator=generator) * (high - low) + low
        return _per_image(n, dims, draw).to(device=x.device, dtype=x.dtype)

    axes = tuple(range(1, x.dim()))
    mean = out.mean(dim=axes, keepdim=True)
    out = (out - mean) * uniform(*CONTRAST) + mean + uniform(-BRIGHTNESS, BRIGHTNESS)
    low = out.amin(dim=axes, keepdim=True)
    span = (out.amax(dim=axes, keepdim=True) - low).clamp_min(1e-6)
    out = ((out - low) / span) ** uniform(*GAMMA) * span + low
    noise = torch.randn(out.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    out = out + noise * NOISE_STD
    spatial = x.shape[2:]
    side = (torch.rand(n, generator=generator) * CUTOUT_FRACTION).tolist()
    starts = torch.rand(n, dims, generator=generator).tolist()
    fill = out.mean(dim=axes)
    for i in range(n):
        index: list[slice | int] = [i, slice(None)]
        for axis, size in enumerate(spatial):
            length = int(side[i] * size)
            begin = int(starts[i][axis] * (size - length + 1))
            index.append(slice(begin, begin + length))
        out[tuple(index)] = fill[i]
    return out
