"""DenseNet121 (2D, 3D, GroupNorm for DP) and multi-label classification."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.site.faults import flip_labels
from flmi.tasks.base import LocalTraining
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.multilabel import MultiLabelTask, multilabel_metrics
from flmi.tasks.networks import DenseNetSettings, build_densenet121, swap_batch_norm

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and reproducibly, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = DenseNetSettings(init_features=8, growth_rate=4)


@pytest.mark.parametrize("dims", [2, 3])
def test_densenet121_classifies_2d_images_and_3d_volumes(dims: int) -> None:
    net = build_densenet121(spatial_dims=dims, in_channels=1, out_channels=3, settings=SMALL)
    names = [n for n, _ in net.named_modules()]
    dense_layers = [n for n in names if "denselayer" in n and n.count(".") == 2]
    assert len(dense_layers) == 6 + 12 + 24 + 16  # DenseNet121's block configuration
    assert net(torch.rand(2, 1, *(32,) * dims)).shape == (2, 3)


def test_densenet_group_norm_variant_has_no_batch_norm_left() -> None:
    settings = DenseNetSettings(init_features=8, growth_rate=4, norm="group")
    net = build_densenet121(spatial_dims=2, in_channels=1, out_channels=2, settings=settings)
    kinds = {type(m) for m in net.modules()}
    assert nn.GroupNorm in kinds
    assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d}


def test_swapped_group_norm_uses_a_group_count_that_divides_every_width() -> None:
    net = nn.Sequential(nn.BatchNorm2d(12), nn.BatchNorm2d(7))
    swap_batch_norm(net, norm="group")
    first, second = net[0], net[1]
    assert isinstance(first, nn.GroupNorm) and first.num_groups == 4
    assert isinstance(second, nn.GroupNorm) and second.num_groups == 1


def test_classification_task_trains_densenet121() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 32, 32)).astype(np.float32)
    y = (x[:, 0, 8:24, 8:24].mean(axis=(1, 2)) > x[:, 0].mean(axis=(1, 2))).astype(np.int64)
    task = ClassificationTask(
        num_classes=2,
        in_channels=1,
        spatial_dims=2,
        positive_label=1,
        model="densenet121",
        densenet=SMALL,
    )
    model = task.build_model(seed=0)
    result = task.fit(
        model=model,
        data=ArraySplit(x=x, y=y),
        training=LocalTraining(
            lr=0.01,
            local_epochs=1,
            local_steps=3,
            batch_size=8,
            optimizer="adam",
            momentum=0.0,
            weight_decay=0.0,
        ),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    assert result.num_steps == 3
    metrics = task.evaluate(model=model, data=ArraySplit(x=x, y=y), device=CPU)
    assert 0.0 <= metrics["auc"] <= 1.0


def test_multilabel_metrics_match_values_worked_out_by_hand() -> None:
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.4], [0.1, 0.6]])
    metrics = multilabel_metrics(labels=labels, probs=probs)
    assert metrics["auc_0"] == pytest.approx(1.0)
    # Label 1: positives score 0.8 and 0.4, negatives 0.2 and 0.6: 3 of 4 pairs ordered.
    assert metrics["auc_1"] == pytest.approx(0.75)
    assert metrics["auc"] == pytest.approx(0.875)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    expected_loss = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert metrics["loss"] == pytest.approx(float(expected_loss))


def test_a_label_without_both_classes_is_left_out_of_the_macro_auc() -> None:
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2]])
    metrics = multilabel_metrics(labels=labels, probs=probs)
    assert math.isnan(metrics["auc_1"])
    assert metrics["auc"] == pytest.approx(metrics["auc_0"])


def _multilabel_data(n: int = 64) -> ArraySplit:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 0.1, (n, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 2, (n, 2))
    x[y[:, 0] == 1, 0, :8] += 1.0  # label 0: bright top half
    x[y[:, 1] == 1, 0, :, :8] -= 1.0  # label 1: dark left half
    return ArraySplit(x=x, y=y.astype(np.int64))


def test_multilabel_task_learns_two_independent_findings() -> None:
    data = _multilabel_data()
    task = MultiLabelTask(num_classes=2, in_channels=1, spatial_dims=2, width=4)
    model = task.build_model(seed=0)
    task.fit(
        model=model,
        data=data,
        training=LocalTraining(
            lr=0.01,
            local_epochs=15,
            local_steps=0,
            batch_size=16,
            optimizer="adam",
            momentum=0.0,
            weight_decay=0.0,
        ),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    metrics = task.evaluate(model=model, data=data, device=CPU)
    assert metrics["auc_0"] > 0.9 and metrics["auc_1"] > 0.9
    ci = task.confidence_intervals(model=model, data=data, device=CPU, resamples=50, seed=0)
    assert ci["auc"][0] <= metrics["auc"] <= ci["auc"][1]


def test_multilabel_targets_of_the_wrong_shape_or_values_are_refused() -> None:
    task = MultiLabelTask(num_classes=2, in_channels=1, spatial_dims=2, width=4)
    x = np.zeros((3, 1, 16, 16), dtype=np.float32)
    with pytest.raises(LabelError, match=r"shape \(N, 2\)"):
        task.check_labels(data=ArraySplit(x=x, y=np.zeros(3, np.int64)), where="site 'a'")
    with pytest.raises(LabelError, match="0 or 1"):
        task.check_labels(data=ArraySplit(x=x, y=np.full((3, 2), 2)), where="site 'a'")


def test_multilabel_refuses_a_model_it_cannot_use() -> None:
    with pytest.raises(ConfigError, match="task.model"):
        MultiLabelTask(num_classes=2, in_channels=1, spatial_dims=2, model="unet")


def test_label_flip_fault_flips_each_multilabel_indicator() -> None:
    x = np.zeros((2, 1, 4, 4), dtype=np.float32)
    y = np.array([[1, 0], [0, 0]])
    split = ArraySplit(x=x, y=y)
    flipped = flip_labels(SiteSplits(train=split, val=split, test=split), num_classes=2)
    np.testing.assert_array_equal(flipped.train.y, [[0, 1], [1, 1]])
    np.testing.assert_array_equal(flipped.test.y, y)
