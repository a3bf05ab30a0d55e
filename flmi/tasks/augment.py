"""Seeded, batched geometric augmentation for 2D and 3D images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_flip_shift(
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    max_shift: float = 0.1,
    max_rotate_deg: float = 10.0,
) -> torch.Tensor:
    """Random horizontal flip, small rotation (2D) and translation, per image.

    Parameters
    ----------
    x
        A batch ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
    generator
        The site's per-round generator (CPU), so the augmentation is reproducible.
    max_shift
        Largest translation as a fraction of the half-width (grid units).
    max_rotate_deg
        Largest in-plane rotation in degrees (2D only).
    """
    n, dims = x.shape[0], x.dim() - 2
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, dims, generator=generator) * 2 - 1) * max_shift
    theta = torch.zeros(n, dims, dims + 1)
    if dims == 2:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_rotate_deg)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta[:, 0, 0] = cos * flip
        theta[:, 0, 1] = -sin
        theta[:, 1, 0] = sin * flip
        theta[:, 1, 1] = cos
    else:
        theta[:, 0, 0] = flip
        theta[:, 1, 1] = 1.0
        theta[:, 2, 2] = 1.0
    theta[:, :, dims] = shift
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
