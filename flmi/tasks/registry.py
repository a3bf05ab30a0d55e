"""Task names a config can choose, each with the function that builds its task.

Adding a task is one line in :data:`TASKS`: its ``[task] name`` and a builder
that takes the validated config and the input shape (channels, spatial
dimensions) and returns a :class:`flmi.tasks.base.Task`. The shape comes from
the data in a simulation (:func:`build_task`, which also checks every target)
and from ``[task]`` on a deployment server, which holds no data
(:func:`task_for_shape`). The builders import their task module when called, so
reading a config never loads torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError

if TYPE_CHECKING:
    from flmi.config import Config
    from flmi.data.arrays import FederatedData
    from flmi.tasks.base import Task

TaskBuilder = Callable[["Config", int, int], "Task"]


def _check_targets(task: Task, data: FederatedData) -> None:
    """Every split of every site, and the central test set, must hold targets the task takes."""
    for name, splits in sorted(data.sites.items()):
        for split_name in ("train", "val", "test"):
            task.check_labels(
                data=getattr(splits, split_name), where=f"site '{name}' {split_name} split"
            )
    task.check_labels(data=data.central_test, where="central test set")


def _classification(config: Config, in_channels: int, spatial_dims: int) -> Task:
    from flmi.tasks.classification import ClassificationTask
    from flmi.tasks.image_tasks import densenet_settings, multilabel_task

    if config.task.multi_label:
        return multilabel_task(config, in_channels=in_channels, spatial_dims=spatial_dims)
    return ClassificationTask(
        num_classes=config.task.num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        positive_label=config.task.positive_label,
        model=config.task.model,
        width=config.task.width,
        augment=config.task.augment,
        dtype=config.task.dtype,
        densenet=densenet_settings(config),
    )


def _segmentation(config: Config, in_channels: int, spatial_dims: int) -> Task:
    from flmi.tasks.image_tasks import segmentation_task

    return segmentation_task(config, in_channels=in_channels, spatial_dims=spatial_dims)


def _regression(config: Config, in_channels: int, spatial_dims: int) -> Task:
    from flmi.tasks.regression import RegressionTask

    return RegressionTask(
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        loss=config.task.loss,
        model=config.task.model,
        width=config.task.width,
        target_offset=config.task.target_offset,
        target_scale=config.task.target_scale,
        augment=config.task.augment,
        dtype=config.task.dtype,
    )


def _survival(config: Config, in_channels: int, spatial_dims: int) -> Task:
    from flmi.tasks.survival import CoxTask

    return CoxTask(in_channels=in_channels, spatial_dims=spatial_dims, dtype=config.task.dtype)


TASKS: dict[str, TaskBuilder] = {
    "classification": _classification,
    "regression": _regression,
    "survival": _survival,
    "segmentation": _segmentation,
}


def task_for_shape(config: Config, *, in_channels: int, spatial_dims: int) -> Task:
    """The task ``[task] name`` chooses, for inputs of ``in_channels`` and ``spatial_dims``.

    Raises
    ------
    ConfigError
        ``[task] name`` is not in :data:`TASKS`.
    """
    builder = TASKS.get(config.task.name)
    if builder is None:
        raise ConfigError(
            f"task.name: unknown task '{config.task.name}'; choose one of {sorted(TASKS)}"
        )
    return builder(config, in_channels, spatial_dims)


def build_task(config: Config, data: FederatedData) -> Task:
    """The task ``[task] name`` chooses, shaped by the data, with every target checked.

    Raises
    ------
    ConfigError
        ``[task] name`` is not in :data:`TASKS`, or ``[task] in_channels`` /
        ``spatial_dims`` are set and differ from the data's.
    LabelError
        A target lies outside what the task takes; the message names the site and split.
    """
    x = data.central_test.x
    in_channels, spatial_dims = int(x.shape[1]), x.ndim - 2
    for key, declared, found in (
        ("in_channels", config.task.in_channels, in_channels),
        ("spatial_dims", config.task.spatial_dims, spatial_dims),
    ):
        if declared is not None and declared != found:
            raise ConfigError(
                f"task.{key} = {declared}, but the data has {found}; set task.{key} = {found}"
            )
    from flmi.tasks.image_tasks import check_densenet_images

    check_densenet_images(config, data)
    task = task_for_shape(config, in_channels=in_channels, spatial_dims=spatial_dims)
    _check_targets(task, data)
    return task
