"""The segmentation and multi-label tasks, and DenseNet settings, shaped by config and input.

The task modules (the segmentation one imports MONAI) are imported when their
task is built, so a classification run never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError
from flmi.tasks.model_registry import MODELS
from flmi.tasks.networks import DenseNetSettings

if TYPE_CHECKING:
    from flmi.config import Config
    from flmi.data.arrays import FederatedData
    from flmi.tasks.multilabel import MultiLabelTask
    from flmi.tasks.segmentation import SegmentationTask


def densenet_settings(config: Config) -> DenseNetSettings:
    """``[task] init_features``, ``growth_rate`` and ``norm`` as DenseNet settings."""
    t = config.task
    return DenseNetSettings(init_features=t.init_features, growth_rate=t.growth_rate, norm=t.norm)


def check_densenet_images(config: Config, data: FederatedData) -> None:
    """Refuse images too small for the network (DenseNet121 halves each side five times)."""
    model = config.task.model
    side = MODELS.lookup(model).min_side
    shape = data.central_test.x.shape[2:]
    if side and min(shape, default=0) < side:
        raise ConfigError(
            f"task.model = '{model}' needs images of at least {side} pixels a "
            f"side, got {list(shape)}; use larger images (data.image_size) or "
            "task.model = 'small_cnn'"
        )


def segmentation_task(config: Config, *, in_channels: int, spatial_dims: int) -> SegmentationTask:
    """The segmentation task for ``[task]``, for inputs of ``in_channels`` in 2D or 3D."""
    from flmi.tasks.segmentation import SegmentationTask

    t = config.task
    return SegmentationTask(
        num_classes=t.num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        model=t.model,
        width=t.width,
        norm=t.norm,
        patch_size=tuple(t.patch_size) if t.patch_size else None,
        sw_overlap=t.sw_overlap,
        augment=t.augment,
    )


def multilabel_task(config: Config, *, in_channels: int, spatial_dims: int) -> MultiLabelTask:
    """The multi-label classification task for ``[task]``, for inputs of this shape."""
    from flmi.tasks.multilabel import MultiLabelTask

    t = config.task
    return MultiLabelTask(
        num_classes=t.num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        model=t.model,
        width=t.width,
        densenet=densenet_settings(config),
        augment=t.augment,
    )
