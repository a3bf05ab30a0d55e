"""Regression: loss, metrics worked out by hand, training, intervals, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.tasks.base import LocalTraining
from flmi.tasks.regression import RegressionTask
from flmi.tasks.regression_metrics import regression_metrics

CPU = torch.device("cpu")


def _linear(loss: str = "mse") -> RegressionTask:
    return RegressionTask(
        in_channels=3,
        spatial_dims=0,
        loss=loss,
        model="linear",
        target_offset=50.0,
        target_scale=10.0,
    )


def _rows(n: int, seed: int) -> ArraySplit:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = (50 + 10 * (x @ np.array([1.0, -0.5, 0.25])) + rng.normal(0, 1, n)).astype(np.float32)
    return ArraySplit(x=x, y=y)


def _training(steps: int = 300) -> LocalTraining:
    return LocalTraining(
        lr=0.05,
        local_epochs=1,
        local_steps=steps,
        batch_size=16,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
    )


def test_metrics_match_hand_computation() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    predictions = np.array([1.0, 3.0, 3.0, 2.0])  # errors 0, 1, 0, -2

    m = regression_metrics(targets=targets, predictions=predictions, loss=0.5)

    assert m["mae"] == pytest.approx(3 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 4))
    assert m["r2"] == pytest.approx(1 - 5 / 5)  # total sum of squares is 5
    assert m["loss"] == 0.5


def test_r2_is_nan_when_targets_do_not_vary_and_everything_nan_for_no_rows() -> None:
    same = regression_metrics(
        targets=np.array([2.0, 2.0]), predictions=np.array([1.0, 3.0]), loss=0
    )
    empty = regression_metrics(targets=np.zeros(0), predictions=np.zeros(0), loss=0)

    assert math.isnan(same["r2"]) and same["mae"] == 1.0
    assert all(math.isnan(v) for v in empty.values())


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_training_a_linear_model_brings_mae_near_the_noise(loss: str) -> None:
    task, train, test = _linear(loss), _rows(400, 0), _rows(200, 1)
    model = task.build_model(seed=0)
    before = task.evaluate(model=model, data=test, device=CPU)

    task.fit(
        model=model,
        data=train,
        training=_training(),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    after = task.evaluate(model=model, data=test, device=CPU)

    assert after["mae"] < 1.5 < before["mae"]  # noise sd is 1: MAE about 0.8
    assert after["r2"] > 0.95


def test_predictions_are_in_target_units_through_offset_and_scale() -> None:
    task = _linear()
    model = task.build_model(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.bias.fill_(1.5)  # type: ignore[operator]

    predicted = task.predict(model=model, x=np.zeros((2, 3), np.float32), device=CPU)

    np.testing.assert_allclose(predicted, [50 + 10 * 1.5] * 2)


def test_bootstrap_intervals_hold_the_point_estimate() -> None:
    task, data = _linear(), _rows(120, 2)
    model = task.build_model(seed=0)
    point = task.evaluate(model=model, data=data, device=CPU)

    ci = task.confidence_intervals(model=model, data=data, device=CPU, resamples=200, seed=0)

    assert set(ci) == {"loss", "mae", "rmse", "r2"}
    for name in ("mae", "rmse"):
        low, high = ci[name]
        assert low <= point[name] <= high and low < high


def test_nan_or_two_column_targets_are_refused_with_the_place_named() -> None:
    task = _linear()
    nan = ArraySplit(x=np.zeros((2, 3), np.float32), y=np.array([1.0, np.nan], np.float32))
    wide = ArraySplit(x=np.zeros((2, 3), np.float32), y=np.zeros((2, 2), np.float32))

    with pytest.raises(LabelError, match="site 'x' test: a target is NaN"):
        task.check_labels(data=nan, where="site 'x' test")
    with pytest.raises(LabelError, match="one target per example"):
        task.check_labels(data=wide, where="here")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "huber"}, r"task\.loss: unknown loss 'huber'"),
        ({"model": "logistic"}, r"task\.model: 'logistic' is not a regression model"),
        ({"model": "small_cnn"}, r"'small_cnn' needs 2D or 3D images.*'linear'"),
        ({"target_scale": 0.0}, r"task\.target_scale must be positive"),
    ],
)
def test_bad_settings_name_the_config_key(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"in_channels": 3, "spatial_dims": 0, "model": "linear"}
    settings.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        RegressionTask(**settings)  # type: ignore[arg-type]


def test_image_regression_trains_a_small_cnn_on_the_given_device() -> None:
    task = RegressionTask(in_channels=1, spatial_dims=2, width=4, target_offset=50, target_scale=10)
    data = ArraySplit(
        x=np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32),
        y=np.linspace(30, 70, 8).astype(np.float32),
    )
    model = task.build_model(seed=0)

    result = task.fit(
        model=model, data=data, training=_training(steps=2), generator=torch.Generator(), device=CPU
    )

    assert result.num_steps == 2 and math.isfinite(result.metrics["loss"])
