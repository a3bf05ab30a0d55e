"""The networks ``[task] model`` can name: any ``torch.nn.Module`` factory, registered by name.

:data:`MODELS` is a :class:`flmi.registry.Registry` of :class:`NetworkSpec`.
flmi's own networks (``small_cnn``, ``logistic``, ``linear``, ``densenet121``,
``unet``, ``segresnet``) are registered below exactly as a plug-in's are
(entry-point group ``flmi.models``; see ``docs/extending.md``). A factory
takes one :class:`NetworkRequest` (the input's shape, the outputs the task
needs and the ``[task]`` size keys) and returns a fresh ``torch.nn.Module``;
the task seeds torch before calling it, so the weights are reproducible.

This module does not import torch: the factories import it when called, so
checking a config stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError
from flmi.core.suggest import one_line, suggest
from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class NetworkRequest:
    """What a task asks a network factory for.

    Parameters
    ----------
    spatial_dims
        0 for feature vectors (tables), 2 for images, 3 for volumes.
    in_channels
        Input channels (features, for tables).
    out_channels
        Outputs per example (classes, 1 for regression) or per pixel (segmentation).
    width
        ``[task] width``: channels of the first block.
    norm
        ``[task] norm`` (``"auto"``: the network's own normalisation).
    init_features
        ``[task] init_features`` (DenseNet).
    growth_rate
        ``[task] growth_rate`` (DenseNet).
    """

    spatial_dims: int
    in_channels: int
    out_channels: int
    width: int = 32
    norm: str = "auto"
    init_features: int = 64
    growth_rate: int = 32


NetworkFactory = Callable[[NetworkRequest], "nn.Module"]


@dataclass(frozen=True)
class NetworkSpec:
    """A selectable network.

    Parameters
    ----------
    summary
        One line: what the network is.
    build
        The factory: a :class:`NetworkRequest` in, a new ``torch.nn.Module`` out.
    spatial_dims
        The input dimensions it takes (0: feature vectors; 2, 3: images, volumes).
    tasks
        The ``[task] name`` values it serves (segmentation networks output one
        map per class, the others one vector per example); empty: every task.
    takes_norm
        Whether it honours ``[task] norm`` (otherwise ``norm`` must stay ``"auto"``).
    min_side
        The shortest image side it takes, in pixels (0: any).
    """

    summary: str
    build: NetworkFactory
    spatial_dims: tuple[int, ...] = (2, 3)
    tasks: tuple[str, ...] = ()
    takes_norm: bool = False
    min_side: int = 0

    def serves(self, task: str) -> bool:
        """Whether ``[task] name = task`` may use this network."""
        return not self.tasks or task in self.tasks


MODELS: Registry[NetworkSpec] = Registry(
    kind="network",
    group="flmi.models",
    field="task.model",
    check=instance_check("network", NetworkSpec),
)


def _dims_text(dims: tuple[int, ...]) -> str:
    if dims == (0,):
        return "takes feature vectors (tabular data)"
    return "needs " + " or ".join(f"{d}D" if d else "tabular" for d in dims) + " images"


def network_for(*, model: str, task: str, spatial_dims: int) -> NetworkSpec:
    """The network ``[task] model`` names, checked against the task and the data's dimensions.

    Raises
    ------
    ConfigError
        An unknown name, a network that does not serve ``task``, or one that
        cannot take inputs of ``spatial_dims``; the message lists what fits.
    """
    spec = MODELS.lookup(model)
    if not spec.serves(task):
        fitting = [n for n in MODELS.names() if MODELS[n].serves(task)]
        raise ConfigError(
            f"task.model: '{model}' is not a {task} model; "
            + suggest(model, fitting, f"choose one of {one_line(fitting)}")
        )
    if spatial_dims not in spec.spatial_dims:
        fitting = [
            n
            for n in MODELS.names()
            if MODELS[n].serves(task) and spatial_dims in MODELS[n].spatial_dims
        ]
        shown = f"{spatial_dims} spatial dimensions" if spatial_dims else "feature vectors"
        hint = " or ".join(repr(n) for n in fitting) or "a network that takes them"
        raise ConfigError(
            f"task.model = '{model}' {_dims_text(spec.spatial_dims)}, but the data has "
            f"{shown}; use task.model = {hint}"
        )
    return spec


def build_network(*, model: str, task: str, request: NetworkRequest) -> nn.Module:
    """A new network for ``request`` (the caller seeds torch first)."""
    spec = network_for(model=model, task=task, spatial_dims=request.spatial_dims)
    return spec.build(request)


def _small_cnn(r: NetworkRequest) -> nn.Module:
    from flmi.tasks.models import SmallCNN

    return SmallCNN(
        in_channels=r.in_channels,
        num_classes=r.out_channels,
        spatial_dims=r.spatial_dims,
        width=r.width,
    )


def _logistic(r: NetworkRequest) -> nn.Module:
    """Binary logistic regression has one logit; more classes, one each (softmax regression)."""
    from torch import nn

    return nn.Linear(r.in_channels, 1 if r.out_channels == 2 else r.out_channels)


def _linear(r: NetworkRequest) -> nn.Module:
    from torch import nn

    return nn.Linear(r.in_channels, r.out_channels)


def _densenet121(r: NetworkRequest) -> nn.Module:
    from flmi.tasks.networks import DenseNetSettings, build_densenet121

    return build_densenet121(
        spatial_dims=r.spatial_dims,
        in_channels=r.in_channels,
        out_channels=r.out_channels,
        settings=DenseNetSettings(
            init_features=r.init_features, growth_rate=r.growth_rate, norm=r.norm
        ),
    )


def _segmentation(model: str) -> NetworkFactory:
    def build(r: NetworkRequest) -> nn.Module:
        from flmi.tasks.networks import build_segmentation_network

        return build_segmentation_network(
            model=model,
            spatial_dims=r.spatial_dims,
            in_channels=r.in_channels,
            num_classes=r.out_channels,
            width=r.width,
            norm=r.norm,
        )

    return build


def _builtin(name: str, spec: NetworkSpec) -> None:
    MODELS.register(name, spec, origin=BUILTIN_ORIGIN)


_builtin(
    "densenet121",
    NetworkSpec(
        summary="MONAI DenseNet121 (init_features, growth_rate, norm)",
        build=_densenet121,
        tasks=("classification",),
        takes_norm=True,
        min_side=32,  # five halvings: stem convolution, stem pooling, three transitions
    ),
)
_builtin(
    "linear",
    NetworkSpec(
        summary="a linear model on feature vectors (regression)",
        build=_linear,
        spatial_dims=(0,),
        tasks=("regression",),
    ),
)
_builtin(
    "logistic",
    NetworkSpec(
        summary="logistic (softmax) regression on feature vectors",
        build=_logistic,
        spatial_dims=(0,),
        tasks=("classification",),
    ),
)
_builtin(
    "segresnet",
    NetworkSpec(
        summary="MONAI SegResNet (init_filters = width)",
        build=_segmentation("segresnet"),
        tasks=("segmentation",),
        takes_norm=True,
    ),
)
_builtin(
    "small_cnn",
    NetworkSpec(
        summary="a compact GroupNorm CNN for 2D or 3D images (width)",
        build=_small_cnn,
        tasks=("classification", "regression"),
    ),
)
_builtin(
    "unet",
    NetworkSpec(
        summary="MONAI UNet (channels width .. 8 width)",
        build=_segmentation("unet"),
        tasks=("segmentation",),
        takes_norm=True,
    ),
)
