"""``tiny_cnn``: a two-convolution network, built from flmi's :class:`NetworkRequest`."""

from __future__ import annotations

from torch import nn

from flmi import NetworkRequest, NetworkSpec


def tiny_cnn(request: NetworkRequest) -> nn.Module:
    """Two 3x3 convolutions of ``width`` channels, global pooling, one linear head."""
    conv = nn.Conv2d if request.spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if request.spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
    w = request.width
    return nn.Sequential(
        conv(request.in_channels, w, kernel_size=3, padding=1),
        nn.GroupNorm(1, w),
        nn.ReLU(),
        conv(w, w, kernel_size=3, padding=1),
        nn.ReLU(),
        pool,
        nn.Flatten(),
        nn.Linear(w, request.out_channels),
    )


TINY_CNN = NetworkSpec(
    summary="tiny_cnn: two convolutions and a linear head (example plug-in)",
    build=tiny_cnn,
    spatial_dims=(2, 3),
    tasks=("classification", "regression"),
)
