"""MONAI networks by config name, with the normalisation layer chosen by the user.

Normalisation matters in federated learning: BatchNorm's running statistics
are what FedBN keeps at each site, while differential privacy (per-example
gradients) needs a layer that does not mix examples, such as GroupNorm or
InstanceNorm. Every network here is built with BatchNorm and then, if another
normalisation is asked for, each BatchNorm layer is swapped for the same-width
GroupNorm (``gcd(channels, 8)`` groups) or affine InstanceNorm, so the choice
works at any width.

MONAI is imported by the builders, when a network is built: the settings and
helpers here load without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from flmi.core.errors import ConfigError
from flmi.core.suggest import one_line

NORMS = ("auto", "batch", "instance", "group")
SEGMENTATION_MODELS = ("unet", "segresnet")
# What "auto" means for each network: the layer MONAI itself uses by default
# (InstanceNorm is made affine, so FedBN has parameters to keep at each site).
DEFAULT_NORM = {"unet": "instance", "segresnet": "group", "densenet121": "batch"}
# Both segmentation networks halve the resolution three times.
SEGMENTATION_DOWNSAMPLING = 8
_MAX_GROUPS = 8
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def resolve_norm(*, model: str, norm: str) -> str:
    """The normalisation a network gets: ``norm``, or the network's default for ``"auto"``."""
    if norm not in NORMS:
        raise ConfigError(f"task.norm must be one of {one_line(NORMS)}, got '{norm}'")
    return DEFAULT_NORM[model] if norm == "auto" else norm


def swap_batch_norm(module: nn.Module, *, norm: str) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` in place by ``norm``; return ``module``.

    Parameters
    ----------
    module
        A network built with BatchNorm.
    norm
        ``"batch"`` (nothing changes), ``"group"`` (GroupNorm with
        ``gcd(channels, 8)`` groups) or ``"instance"`` (affine InstanceNorm).
    """
    if norm == "batch":
        return module
    if norm not in ("group", "instance"):
        raise ConfigError(f"task.norm must be 'batch', 'group' or 'instance', got '{norm}'")
    for _, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, _BATCH_NORMS):
                continue
            channels = child.num_features
            replacement: nn.Module
            if norm == "group":
                replacement = nn.GroupNorm(math.gcd(channels, _MAX_GROUPS), channels)
            elif isinstance(child, nn.BatchNorm3d):
                replacement = nn.InstanceNorm3d(channels, affine=True)
            elif isinstance(child, nn.BatchNorm2d):
                replacement = nn.InstanceNorm2d(channels, affine=True)
            else:
                replacement = nn.InstanceNorm1d(channels, affine=True)
            setattr(parent, name, replacement)
    return module


@dataclass(frozen=True)
class DenseNetSettings:
    """Size and normalisation of a MONAI DenseNet121.

    Parameters
    ----------
    init_features
        Channels of the first convolution (64 in the paper).
    growth_rate
        Channels each dense layer adds (32 in the paper).
    norm
        ``"auto"`` (BatchNorm), ``"batch"``, ``"group"`` (for DP-SGD) or ``"instance"``.
    """

    init_features: int = 64
    growth_rate: int = 32
    norm: str = "auto"

    def check(self) -> None:
        """Refuse sizes no network can have."""
        if self.init_features < 1:
            raise ConfigError(f"task.init_features must be at least 1, got {self.init_features}")
        if self.growth_rate < 1:
            raise ConfigError(f"task.growth_rate must be at least 1, got {self.growth_rate}")
        resolve_norm(model="densenet121", norm=self.norm)


# DenseNet121 halves the resolution five times (stem convolution, stem pooling and three
# transitions), so each side must be at least this long.
DENSENET_MIN_SIDE = 32


def build_densenet121(
    *, spatial_dims: int, in_channels: int, out_channels: int, settings: DenseNetSettings
) -> nn.Module:
    """A MONAI DenseNet121 (block configuration 6, 12, 24, 16) with the chosen normalisation."""
    from monai.networks.nets.densenet import DenseNet121

    settings.check()
    net = DenseNet121(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_features=settings.init_features,
        growth_rate=settings.growth_rate,
        norm="batch",
    )
    return swap_batch_norm(net, norm=resolve_norm(model="densenet121", norm=settings.norm))


def build_segmentation_network(
    *,
    model: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    width: int,
    norm: str,
) -> nn.Module:
    """A MONAI ``UNet`` or ``SegResNet`` that outputs one logit map per class.

    Parameters
    ----------
    model
        ``"unet"`` (channels ``width, 2 width, 4 width, 8 width``, strides 2,
        one residual unit per level) or ``"segresnet"`` (``init_filters = width``).
    spatial_dims
        2 or 3.
    in_channels
        Image channels.
    num_classes
        Output channels, background included.
    width
        Channels of the first level.
    norm
        ``"auto"`` (UNet: InstanceNorm; SegResNet: GroupNorm), ``"batch"``,
        ``"instance"`` or ``"group"``.
    """
    if model not in SEGMENTATION_MODELS:
        raise ConfigError(
            f"task.model: '{model}' is not a segmentation network; "
            f"choose one of {one_line(SEGMENTATION_MODELS)}"
        )
    chosen = resolve_norm(model=model, norm=norm)
    net: nn.Module
    if model == "unet":
        from monai.networks.nets.unet import UNet

        net = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=(width, 2 * width, 4 * width, 8 * width),
            strides=(2, 2, 2),
            num_res_units=1,
            norm="batch",
        )
    else:
        from monai.networks.nets.segresnet import SegResNet

        net = SegResNet(
            spatial_dims=spatial_dims,
            init_filters=width,
            in_channels=in_channels,
            out_channels=num_classes,
            norm="batch",
        )
    return swap_batch_norm(net, norm=chosen)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
