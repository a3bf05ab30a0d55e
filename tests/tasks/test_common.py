"""The shared task base: fit, evaluate and intervals from a task's own loss and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flmi.data.arrays import ArraySplit
from flmi.tasks.base import LocalTraining, Task
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.common import SupervisedTask
from flmi.tasks.multilabel import MultiLabelTask
from flmi.tasks.regression import RegressionTask
from flmi.tasks.segmentation import SegmentationTask
from flmi.tasks.survival import CoxTask

CPU = torch.device("cpu")


class MeanError(SupervisedTask):
    """A toy task: predict one number per row, scored by the mean error (prediction - target)."""

    in_channels = 1
    spatial_dims = 0

    @property
    def name(self) -> str:
        return "mean_error"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Linear(1, 1, dtype=torch.float64)

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(data.x), torch.from_numpy(data.y)

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return ((model(x)[:, 0] - y) ** 2).mean()

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            return data.y, model(torch.from_numpy(data.x))[:, 0].numpy()

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        return {"error": float((predictions - targets).mean())}

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        return {"error": math.nan}


def _constant_model(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(value)
    return model


def _split(targets: list[float]) -> ArraySplit:
    return ArraySplit(x=np.zeros((len(targets), 1)), y=np.array(targets))


def test_evaluate_applies_the_tasks_metric_to_its_predictions() -> None:
    # The model predicts 2 for every row; targets 1, 2, 6: errors 1, 0, -4, mean -1.
    metrics = MeanError().evaluate(model=_constant_model(2.0), data=_split([1, 2, 6]), device=CPU)

    assert metrics == {"error": -1.0}


def test_an_empty_split_gets_the_tasks_empty_metrics_and_no_intervals() -> None:
    task, model, empty = MeanError(), _constant_model(0.0), _split([])

    assert math.isnan(task.evaluate(model=model, data=empty, device=CPU)["error"])
    assert task.confidence_intervals(model=model, data=empty, device=CPU, resamples=9, seed=0) == {}


def test_intervals_resample_rows_and_need_a_resample() -> None:
    task, model, data = MeanError(), _constant_model(0.0), _split([0.0, 1.0, 2.0, 3.0])

    ci = task.confidence_intervals(model=model, data=data, device=CPU, resamples=200, seed=1)
    none = task.confidence_intervals(model=model, data=data, device=CPU, resamples=0, seed=1)

    low, high = ci["error"]
    # Every resampled mean of -(0..3) lies in [-3, 0]; the point estimate -1.5 lies inside.
    assert -3.0 <= low < -1.5 < high <= 0.0
    assert none == {}


def test_fit_trains_on_the_tasks_tensors_with_its_loss() -> None:
    task = MeanError()
    model = task.build_model(seed=0)
    data = ArraySplit(x=np.linspace(-1, 1, 32)[:, None], y=np.full(32, 5.0))
    training = LocalTraining(
        lr=0.1,
        local_epochs=1,
        local_steps=200,
        batch_size=8,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
    )

    result = task.fit(
        model=model,
        data=data,
        training=training,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )

    assert result.num_steps == 200
    assert abs(task.evaluate(model=model, data=data, device=CPU)["error"]) < 1e-3


@pytest.mark.parametrize(
    "task",
    [
        ClassificationTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1),
        MultiLabelTask(num_classes=2, in_channels=1, spatial_dims=2),
        RegressionTask(in_channels=3, spatial_dims=0, model="linear"),
        SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2),
        CoxTask(in_channels=3, spatial_dims=0),
    ],
    ids=lambda t: type(t).__name__,
)
def test_every_built_in_task_is_a_supervised_task_and_a_task(task: Task) -> None:
    assert isinstance(task, SupervisedTask)
