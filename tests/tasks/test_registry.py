"""The task registry: names a config can choose, and how a new task plugs in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flmi.config import Config, config_from_dict
from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.tasks import registry
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.registry import TASKS, build_task
from flmi.tasks.regression import RegressionTask
from flmi.tasks.survival import CoxTask
from tests.conftest import tiny_tables


def _data(y: np.ndarray, x: np.ndarray) -> FederatedData:
    split = ArraySplit(x=x, y=y)
    return FederatedData(
        sites={"a": SiteSplits(train=split, val=split, test=split)}, central_test=split
    )


def test_registry_names_classification_regression_and_survival() -> None:
    assert {"classification", "regression", "survival"} <= set(TASKS)


def test_classification_config_builds_the_same_classification_task_as_before() -> None:
    config = config_from_dict(tiny_tables())
    data = _data(np.array([0, 1, 1]), np.zeros((3, 1, 16, 16), dtype=np.float32))

    task = build_task(config, data)

    assert isinstance(task, ClassificationTask)
    assert (task.num_classes, task.in_channels, task.spatial_dims, task.width) == (2, 1, 2, 4)


def test_regression_and_survival_names_build_their_tasks() -> None:
    regression = config_from_dict(
        tiny_tables(data={"source": "synthetic_age"}, task={"name": "regression", "width": 4})
    )
    images = _data(np.array([30.0, 40.0], dtype=np.float32), np.zeros((2, 1, 16, 16), np.float32))
    assert isinstance(build_task(regression, images), RegressionTask)

    survival = config_from_dict(
        tiny_tables(
            data={"source": "tcga_brca", "path": "/nowhere"},
            partition={"num_sites": 6},
            task={"name": "survival", "model": "linear"},
        )
    )
    rows = _data(np.array([[1.0, 5.0], [0.0, 7.0]], np.float32), np.zeros((2, 3), np.float32))
    assert isinstance(build_task(survival, rows), CoxTask)


def test_unknown_task_name_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"task\.name: unknown task 'segmentation_xyz'.*classification"
    ):
        config_from_dict(tiny_tables(task={"name": "segmentation_xyz"}))


def test_task_that_does_not_fit_the_data_source_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"task\.name = 'survival' does not fit data\.source"):
        config_from_dict(tiny_tables(task={"name": "survival"}))


def test_label_flip_fault_is_refused_for_a_task_without_classes() -> None:
    with pytest.raises(ConfigError, match=r"sites\.hospital_1\.fault = 'label_flip' needs class"):
        config_from_dict(
            tiny_tables(
                data={"source": "synthetic_age"},
                task={"name": "regression"},
                sites={"hospital_1": {"fault": "label_flip"}},
            )
        )


def test_a_new_task_plugs_in_with_one_registration() -> None:
    built: list[tuple[int, int]] = []

    def builder(config: object, in_channels: int, spatial_dims: int) -> ClassificationTask:
        built.append((in_channels, spatial_dims))
        return ClassificationTask(
            num_classes=2, in_channels=in_channels, spatial_dims=spatial_dims, positive_label=1
        )

    registry.TASKS.register(
        "mine", registry.TaskSpec(summary="mine", build=builder, sources=("synthetic",))
    )
    try:
        config = config_from_dict(tiny_tables(task={"name": "mine"}))
        task = build_task(config, _data(np.array([0, 1]), np.zeros((2, 1, 16, 16), np.float32)))
    finally:
        registry.TASKS.unregister("mine")

    assert built == [(1, 2)] and isinstance(task, ClassificationTask)  # the data's shape


def test_a_tasks_own_check_refuses_its_keys_when_the_config_is_read() -> None:
    # Arrange: a plug-in task that refuses width > 8, naming the key
    def check(config: Config) -> None:
        if config.task.width > 8:
            raise ConfigError(f"task.width = {config.task.width}: task 'narrow' takes <= 8")

    def builder(config: object, in_channels: int, spatial_dims: int) -> ClassificationTask:
        return ClassificationTask(
            num_classes=2, in_channels=in_channels, spatial_dims=spatial_dims, positive_label=1
        )

    registry.TASKS.register(
        "narrow",
        registry.TaskSpec(summary="narrow", build=builder, sources=("synthetic",), check=check),
    )
    try:
        # Act / Assert: the check runs with the other config checks, before anything runs
        config_from_dict(tiny_tables(task={"name": "narrow", "width": 8}))
        with pytest.raises(ConfigError, match="task.width = 16: task 'narrow' takes <= 8"):
            config_from_dict(tiny_tables(task={"name": "narrow", "width": 16}))
    finally:
        registry.TASKS.unregister("narrow")


def test_segmentation_refuses_a_network_that_cannot_segment_through_its_own_check() -> None:
    spec = TASKS["segmentation"]
    assert spec.check is not None
    with pytest.raises(ConfigError, match="task.model = 'small_cnn' cannot segment"):
        config_from_dict(
            tiny_tables(
                data={"source": "synthetic_lesions"},
                task={"name": "segmentation", "model": "small_cnn"},
            )
        )


def test_build_task_checks_every_split_and_names_the_bad_one() -> None:
    config = config_from_dict(
        tiny_tables(data={"source": "synthetic_age"}, task={"name": "regression", "width": 4})
    )
    data = _data(np.array([30.0, np.nan], np.float32), np.zeros((2, 1, 16, 16), np.float32))

    with pytest.raises(LabelError, match="site 'a' train split: a target is NaN"):
        build_task(config, data)


def test_reading_a_config_does_not_import_torch_through_the_registry(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; import flmi.config, flmi.tasks.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        (
            {
                "data": {"source": "tcga_brca", "path": "x"},
                "task": {"name": "survival"},
                "partition": {"num_sites": 4},
            },
            r"Fed-TCGA-BRCA has its own 6 regions",
        ),
        (
            {
                "data": {"source": "tcga_brca"},
                "task": {"name": "survival"},
                "partition": {"num_sites": 6},
            },
            r"data\.path is required when data\.source = 'tcga_brca'",
        ),
        ({"report": {"km_bin_width": -1.0}}, r"report\.km_bin_width must not be negative"),
        ({"report": {"min_count": 0}}, r"report\.min_count must be at least 1"),
        ({"report": {"flag_distance": 1.5}}, r"report\.flag_distance must be in \(0, 1\]"),
        ({"task": {"target_scale": 0.0}}, r"task\.target_scale must be positive"),
        ({"task": {"loss": "huber"}}, r"task\.loss: expected one of 'mse', 'l1'"),
    ],
)
def test_bad_task_and_report_settings_name_the_key(
    sections: dict[str, dict[str, object]], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(tiny_tables(**sections))
