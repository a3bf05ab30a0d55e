"""Task names a config can choose, each with the function that builds its task.

:data:`TASKS` is a :class:`flmi.registry.Registry` of :class:`TaskSpec`;
flmi's own tasks are registered below exactly as a plug-in's are (entry-point
group ``flmi.tasks``; see ``docs/extending.md``). A task's builder takes the
validated config and the input shape (channels, spatial dimensions) and
returns a :class:`flmi.tasks.base.Task`. The shape comes from
the data in a simulation (:func:`build_task`, which also checks every target)
and from ``[task]`` on a deployment server, which holds no data
(:func:`task_for_shape`). The builders import their task module when called, so
reading a config never loads torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError
from flmi.core.suggest import one_line
from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check

if TYPE_CHECKING:
    from flmi.config import Config
    from flmi.data.arrays import FederatedData
    from flmi.tasks.base import Task

TaskBuilder = Callable[["Config", int, int], "Task"]
TaskCheck = Callable[["Config"], None]


@dataclass(frozen=True)
class TaskSpec:
    """A selectable task.

    Parameters
    ----------
    summary
        One line: what is learnt.
    build
        ``build(config, in_channels, spatial_dims)``: the task for inputs of
        that shape (0 spatial dimensions: feature vectors).
    sources
        The ``[data] source`` values whose targets it takes (beyond the
        sources that list the task themselves).
    check
        ``check(config)``: the task's own checks of its ``[task]`` keys against
        the rest of the config, run by :func:`flmi.config.check_config` before
        anything is read or written; raises :class:`ConfigError` naming the key
        and the fix. ``None``: nothing beyond the generic checks.
    """

    summary: str
    build: TaskBuilder
    sources: tuple[str, ...] = ()
    check: TaskCheck | None = None


TASKS: Registry[TaskSpec] = Registry(
    kind="task", group="flmi.tasks", field="task.name", check=instance_check("task", TaskSpec)
)


def check_task(task: Task, data: FederatedData) -> None:
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_classification(config: Config) -> None:
    """Multi-label and lesion-presence labels need the data that has them."""
    t, source = config.task, config.data.source
    if t.multi_label:
        _require(
            source == "synthetic_lesions",
            f"task.multi_label needs one label per finding, which data.source = "
            f"'{source}' does not have; use data.source = 'synthetic_lesions'",
        )
    elif source == "synthetic_lesions":
        _require(
            t.num_classes == 2,
            "data.source = 'synthetic_lesions' labels images lesion present or not: set "
            "task.num_classes = 2, or task.multi_label = true for one label per lesion class",
        )


def _check_segmentation(config: Config) -> None:
    """A network that segments, data with masks, one label map per image."""
    from flmi.tasks.model_registry import MODELS

    t, source = config.task, config.data.source
    segmenting = [name for name in MODELS.names() if MODELS[name].serves("segmentation")]
    _require(
        MODELS.lookup(t.model).serves("segmentation"),
        f"task.model = '{t.model}' cannot segment; for task.name = 'segmentation' "
        f"choose one of {one_line(segmenting)}",
    )
    _require(
        source == "synthetic_lesions",
        f"task.name = 'segmentation' needs masks, which data.source = '{source}' does "
        "not have; use data.source = 'synthetic_lesions'",
    )
    _require(not t.multi_label, "task.multi_label applies to classification only")


def _builtin(name: str, spec: TaskSpec) -> None:
    TASKS.register(name, spec, origin=BUILTIN_ORIGIN)


_builtin(
    "classification",
    TaskSpec(
        summary="binary, multi-class or multi-label classification of images or rows",
        build=_classification,
        sources=(
            "synthetic",
            "medmnist",
            "heart_disease",
            "csv",
            "manifest",
            "synthetic_lesions",
        ),
        check=_check_classification,
    ),
)
_builtin(
    "regression",
    TaskSpec(
        summary="one number per image or row",
        build=_regression,
        sources=("synthetic_age", "csv"),
    ),
)
_builtin(
    "segmentation",
    TaskSpec(
        summary="a mask per image or volume (MONAI networks)",
        build=_segmentation,
        sources=("synthetic_lesions",),
        check=_check_segmentation,
    ),
)
_builtin(
    "survival",
    TaskSpec(
        summary="a Cox model of time to event on feature vectors",
        build=_survival,
        sources=("tcga_brca",),
    ),
)


def task_for_shape(config: Config, *, in_channels: int, spatial_dims: int) -> Task:
    """The task ``[task] name`` chooses, for inputs of ``in_channels`` and ``spatial_dims``.

    Raises
    ------
    ConfigError
        ``[task] name`` is not in :data:`TASKS`.
    """
    return TASKS.lookup(config.task.name).build(config, in_channels, spatial_dims)


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
    check_task(task, data)
    return task
