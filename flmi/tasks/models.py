"""Small default networks. Normalisation is GroupNorm, so DP-SGD can use them later."""

from __future__ import annotations

import torch
from torch import nn


def _conv(spatial_dims: int, c_in: int, c_out: int) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return conv(c_in, c_out, kernel_size=3, padding=1, bias=False)


def _block(spatial_dims: int, c_in: int, c_out: int) -> list[nn.Module]:
    groups = max(1, c_out // 8)
    return [_conv(spatial_dims, c_in, c_out), nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A compact CNN for 2D or 3D images: five conv blocks, two poolings, a linear head.

    Parameters
    ----------
    in_channels
        Image channels (1 for grey, 3 for RGB).
    num_classes
        Output classes.
    spatial_dims
        2 or 3.
    width
        Channels of the first block; later blocks use 2x and 4x.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, spatial_dims: int, width: int
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        pool = nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)
        gap = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        w = width
        self.features = nn.Sequential(
            *_block(spatial_dims, in_channels, w),
            *_block(spatial_dims, w, w),
            pool,
            *_block(spatial_dims, w, 2 * w),
            *_block(spatial_dims, 2 * w, 2 * w),
            pool,
            *_block(spatial_dims, 2 * w, 4 * w),
            gap,
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        out: torch.Tensor = self.head(self.features(x))
        return out
