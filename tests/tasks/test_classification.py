from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.tasks.classification import ClassificationTask


def _logistic() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=13, spatial_dims=0, positive_label=1, model="logistic"
    )


def test_binary_logistic_regression_has_one_logit_and_bce_loss() -> None:
    task = _logistic()
    model = task.build_model(seed=0)
    assert isinstance(model, torch.nn.Linear) and model.out_features == 1
    rng = np.random.default_rng(0)
    data = ArraySplit(x=rng.normal(size=(20, 13)).astype(np.float32), y=rng.integers(0, 2, 20))
    probs, logits = task.predict_proba(model=model, x=data.x, device=torch.device("cpu"))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 1], torch.sigmoid(logits[:, 0]).numpy(), rtol=1e-6)
    metrics = task.evaluate(model=model, data=data, device=torch.device("cpu"))
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], torch.from_numpy(data.y).float())
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_cnn_on_tabular_data_is_a_config_error_naming_the_model() -> None:
    with pytest.raises(ConfigError, match="task.model = 'small_cnn' needs 2D or 3D images"):
        ClassificationTask(num_classes=2, in_channels=13, spatial_dims=0, positive_label=1)


def test_logistic_model_on_images_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="task.model = 'logistic' takes feature vectors"):
        ClassificationTask(
            num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, model="logistic"
        )


def test_label_check_names_the_split_the_label_and_the_classes() -> None:
    data = ArraySplit(x=np.zeros((3, 13), np.float32), y=np.array([0, 1, 3]))
    with pytest.raises(
        LabelError, match=r"site 'a' train split: label 3 is outside the task's classes 0\.\.1"
    ):
        _logistic().check_labels(data=data, where="site 'a' train split")


def test_model_initialisation_does_not_touch_the_global_torch_generator() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    _logistic().build_model(seed=5)
    assert torch.equal(torch.rand(1), before)
