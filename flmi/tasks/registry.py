"""Task names a config can choose, each with the function that builds its task.

Adding a task is one line in :data:`TASKS`: its ``[task] name`` and a builder
that takes the validated config and the loaded data and returns a
:class:`flmi.tasks.base.Task` (checking every target against the task). The
builders import their task module when called, so reading a config never
loads torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError

if TYPE_CHECKING:
    from flmi.config import Config
    from flmi.data.arrays import FederatedData
    from flmi.tasks.base import Task

TaskBuilder = Callable[["Config", "FederatedData"], "Task"]


def _check_targets(task: Task, data: FederatedData) -> None:
    """Every split of every site, and the central test set, must hold targets the task takes."""
    for name, splits in sorted(data.sites.items()):
        for split_name in ("train", "val", "test"):
            task.check_labels(
                data=getattr(splits, split_name), where=f"site '{name}' {split_name} split"
            )
    task.check_labels(data=data.central_test, where="central test set")


def _classification(config: Config, data: FederatedData) -> Task:
    from flmi.tasks.classification import ClassificationTask

    x = data.central_test.x
    return ClassificationTask(
        num_classes=config.task.num_classes,
        in_channels=int(x.shape[1]),
        spatial_dims=x.ndim - 2,
        positive_label=config.task.positive_label,
        model=config.task.model,
        width=config.task.width,
        augment=config.task.augment,
        dtype=config.task.dtype,
    )


def _regression(config: Config, data: FederatedData) -> Task:
    from flmi.tasks.regression import RegressionTask

    x = data.central_test.x
    return RegressionTask(
        in_channels=int(x.shape[1]),
        spatial_dims=x.ndim - 2,
        loss=config.task.loss,
        model=config.task.model,
        width=config.task.width,
        target_offset=config.task.target_offset,
        target_scale=config.task.target_scale,
        augment=config.task.augment,
        dtype=config.task.dtype,
    )


def _survival(config: Config, data: FederatedData) -> Task:
    from flmi.tasks.survival import CoxTask

    x = data.central_test.x
    return CoxTask(in_channels=int(x.shape[1]), spatial_dims=x.ndim - 2, dtype=config.task.dtype)


TASKS: dict[str, TaskBuilder] = {
    "classification": _classification,
    "regression": _regression,
    "survival": _survival,
}


def build_task(config: Config, data: FederatedData) -> Task:
    """The task ``[task] name`` chooses, shaped by the data, with every target checked.

    Raises
    ------
    ConfigError
        ``[task] name`` is not in :data:`TASKS`.
    LabelError
        A target lies outside what the task takes; the message names the site and split.
    """
    builder = TASKS.get(config.task.name)
    if builder is None:
        raise ConfigError(
            f"task.name: unknown task '{config.task.name}'; choose one of {sorted(TASKS)}"
        )
    task = builder(config, data)
    _check_targets(task, data)
    return task
