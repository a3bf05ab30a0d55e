"""Segmentation task: MONAI metrics by hand, sliding windows, training, norms, bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.data.synthetic_lesions import generate_lesion_hospitals, make_lesion_hospitals
from flmi.tasks.base import LocalTraining
from flmi.tasks.networks import build_segmentation_network
from flmi.tasks.segmentation import SegmentationTask, seg_metric_names
from flmi.tasks.segmentation_metrics import aggregate, case_scores
from flmi.tasks.torch_params import normalisation_names

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and reproducibly, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _square(size: int, start: int, stop: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[start:stop, start:stop] = 1
    return mask


def test_dice_and_hd95_match_values_worked_out_by_hand() -> None:
    truth = _square(16, 4, 8)[None]  # 16 pixels
    predicted = _square(16, 4, 10)[None]  # 36 pixels, all 16 true ones inside
    scores = case_scores(predicted=predicted, truth=truth, num_classes=2, loss=np.zeros(1))
    assert scores.dice[0, 0] == pytest.approx(2 * 16 / (16 + 36))
    # The farthest predicted border pixel, (9, 9), is 2 * sqrt(2) from the truth's corner (7, 7).
    assert 2.0 <= scores.hd95[0, 0] <= 2 * math.sqrt(2) + 1e-6


def test_perfect_prediction_scores_dice_one_and_hd95_zero() -> None:
    truth = _square(16, 3, 9)[None]
    scores = case_scores(predicted=truth, truth=truth, num_classes=2, loss=np.zeros(1))
    assert scores.dice[0, 0] == pytest.approx(1.0)
    assert scores.hd95[0, 0] == pytest.approx(0.0)


def test_empty_cases_leave_dice_out_and_score_hd95_zero_or_the_diagonal() -> None:
    empty = torch.zeros(1, 16, 16, dtype=torch.long)
    lesion = _square(16, 2, 5)[None]
    both_empty = case_scores(predicted=empty, truth=empty, num_classes=2, loss=np.zeros(1))
    false_positive = case_scores(predicted=lesion, truth=empty, num_classes=2, loss=np.zeros(1))
    missed = case_scores(predicted=empty, truth=lesion, num_classes=2, loss=np.zeros(1))
    assert math.isnan(both_empty.dice[0, 0]) and both_empty.hd95[0, 0] == 0.0
    assert math.isnan(false_positive.dice[0, 0])
    assert false_positive.hd95[0, 0] == pytest.approx(math.sqrt(2) * 16)
    assert missed.dice[0, 0] == 0.0 and missed.hd95[0, 0] == pytest.approx(math.sqrt(2) * 16)


def test_aggregate_averages_defined_cases_per_class_then_over_classes() -> None:
    truth = torch.stack([_square(16, 2, 6), 2 * _square(16, 8, 12), torch.zeros(16, 16).long()])
    predicted = truth.clone()
    predicted[1] = 0  # class 2 missed in case 1
    scores = case_scores(
        predicted=predicted, truth=truth, num_classes=3, loss=np.array([0.1, 0.2, 0.3])
    )
    metrics = aggregate(scores)
    assert metrics["dice_1"] == pytest.approx(1.0)  # only case 0 holds class 1
    assert metrics["dice_2"] == pytest.approx(0.0)  # only case 1 holds class 2
    assert metrics["dice"] == pytest.approx(0.5)
    assert metrics["loss"] == pytest.approx(0.2)
    assert sorted(metrics) == seg_metric_names(3)


def _tiny_data(*, dims: int = 2, size: int = 16, n: int = 100) -> ArraySplit:
    hospitals = make_lesion_hospitals(num_sites=2, seed=0, n_patients_total=n, image_size=size)
    data = generate_lesion_hospitals(
        hospitals=hospitals, seed=0, image_size=size, spatial_dims=dims
    )
    site = data.sites["hospital_1"]
    return site.train


def _training(steps: int, lr: float = 0.01) -> LocalTraining:
    return LocalTraining(
        lr=lr,
        local_epochs=1,
        local_steps=steps,
        batch_size=8,
        optimizer="adam",
        momentum=0.0,
        weight_decay=0.0,
    )


def test_training_lowers_the_loss_and_is_reproducible_from_the_generator() -> None:
    data = _tiny_data()
    task = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, width=4)
    before = task.evaluate(model=task.build_model(seed=0), data=data, device=CPU)["loss"]
    weights = []
    for _ in range(2):
        model = task.build_model(seed=0)
        task.fit(
            model=model,
            data=data,
            training=_training(15),
            generator=torch.Generator().manual_seed(5),
            device=CPU,
        )
        weights.append([p.detach().clone() for p in model.parameters()])
    after = task.evaluate(model=model, data=data, device=CPU)["loss"]
    assert after < before - 0.1
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Recorder(nn.Module):
    """Wraps a network and records the spatial shape of every input it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        out: torch.Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("dims", [2, 3])
def test_volumes_larger_than_the_patch_go_through_sliding_windows(dims: int) -> None:
    task = SegmentationTask(
        num_classes=2, in_channels=1, spatial_dims=dims, width=4, patch_size=(16,) * dims
    )
    model = _Recorder(task.build_model(seed=0))
    x = torch.rand(1, 1, *(24,) * dims)
    logits = task.predict_logits(model=model, x=x, device=CPU)
    assert logits.shape == (1, 2, *(24,) * dims)
    assert model.shapes and all(s == (16,) * dims for s in model.shapes)


def test_training_crops_patches_of_the_configured_size() -> None:
    data = _tiny_data(size=24)
    task = SegmentationTask(
        num_classes=2, in_channels=1, spatial_dims=2, width=4, patch_size=(16, 16), augment=True
    )
    model = _Recorder(task.build_model(seed=0))
    task.fit(
        model=model,
        data=data,
        training=_training(2),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    assert model.shapes == [(16, 16), (16, 16)]


def test_evaluation_returns_only_named_aggregate_numbers() -> None:
    data = _tiny_data()
    task = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, width=4)
    metrics = task.evaluate(model=task.build_model(seed=0), data=data, device=CPU)
    assert sorted(metrics) == seg_metric_names(2)
    assert all(isinstance(v, float) for v in metrics.values())


def test_bootstrap_intervals_resample_cases_and_bracket_the_estimate() -> None:
    data = _tiny_data()
    task = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, width=4)
    model = task.build_model(seed=0)
    task.fit(
        model=model,
        data=data,
        training=_training(10),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    point = task.evaluate(model=model, data=data, device=CPU)
    ci = task.confidence_intervals(model=model, data=data, device=CPU, resamples=200, seed=1)
    for key in ("dice", "hd95", "loss"):
        low, high = ci[key]
        assert low <= point[key] <= high
        assert low < high
    again = task.confidence_intervals(model=model, data=data, device=CPU, resamples=200, seed=1)
    assert again == ci


@pytest.mark.parametrize(
    ("model", "norm", "layer"),
    [
        ("unet", "auto", nn.InstanceNorm2d),
        ("unet", "group", nn.GroupNorm),
        ("unet", "batch", nn.BatchNorm2d),
        ("segresnet", "auto", nn.GroupNorm),
        ("segresnet", "instance", nn.InstanceNorm2d),
    ],
)
def test_each_network_takes_the_chosen_normalisation_with_parameters_fedbn_can_keep(
    model: str, norm: str, layer: type[nn.Module]
) -> None:
    net = build_segmentation_network(
        model=model, spatial_dims=2, in_channels=1, num_classes=3, width=4, norm=norm
    )
    kinds = nn.modules.batchnorm._NormBase | nn.GroupNorm
    norms = [m for m in net.modules() if isinstance(m, kinds)]
    assert norms and all(isinstance(m, layer) for m in norms)
    assert normalisation_names(net)
    assert net(torch.rand(1, 1, 16, 16)).shape == (1, 3, 16, 16)


def test_patch_sizes_the_network_cannot_take_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"task.patch_size.*multiple of 8"):
        SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, patch_size=(12, 12))
    with pytest.raises(ConfigError, match=r"task.patch_size.*at least 16"):
        SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, patch_size=(8, 8))
    with pytest.raises(ConfigError, match="task.patch_size"):
        SegmentationTask(num_classes=2, in_channels=1, spatial_dims=3, patch_size=(16, 16))
    task = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, patch_size=(32, 32))
    with pytest.raises(ConfigError, match="does not fit"):
        task.check_image_shape((24, 24), where="site 'a' train split")
    whole = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2)
    with pytest.raises(ConfigError, match="set task.patch_size"):
        whole.check_image_shape((20, 20), where="site 'a' train split")


def test_masks_outside_the_classes_or_of_the_wrong_shape_are_refused() -> None:
    task = SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2)
    x = np.zeros((2, 1, 16, 16), dtype=np.float32)
    bad_value = np.zeros((2, 16, 16), dtype=np.int64)
    bad_value[0, 3, 3] = 2
    with pytest.raises(LabelError, match="mask value 2.*num_classes"):
        task.check_labels(data=ArraySplit(x=x, y=bad_value), where="site 'a' train split")
    with pytest.raises(LabelError, match="do not match"):
        task.check_labels(
            data=ArraySplit(x=x, y=np.zeros((2, 8, 8), np.int64)), where="site 'a' train split"
        )


def test_unknown_model_and_too_few_classes_are_refused() -> None:
    with pytest.raises(ConfigError, match="task.model"):
        SegmentationTask(num_classes=2, in_channels=1, spatial_dims=2, model="small_cnn")
    with pytest.raises(ConfigError, match="task.num_classes"):
        SegmentationTask(num_classes=1, in_channels=1, spatial_dims=2)
