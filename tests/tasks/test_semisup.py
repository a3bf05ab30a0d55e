"""FixMatch and pseudo-label local training, and the strong augmentation they use."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from flmi.core.keys import Metric, TrainMetric
from flmi.data.arrays import ArraySplit
from flmi.tasks.base import LocalTraining
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.semisup import (
    align,
    class_quota_selection,
    frozen_teacher,
    mean_prediction,
    soft_cross_entropy,
)
from flmi.tasks.strong_augment import strong_augment
from flmi.tasks.torch_params import params_copy


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: tiny models train fastest that way on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _training(
    method: str = "fixmatch", threshold: float = 0.0, **extra: float | str
) -> LocalTraining:
    values: dict[str, float | int | str] = {
        "lr": 0.1,
        "local_epochs": 1,
        "local_steps": 0,
        "batch_size": 8,
        "optimizer": "sgd",
        "momentum": 0.0,
        "weight_decay": 0.0,
        "semi_supervised": method,
        "pseudo_label_threshold": threshold,
        "unlabeled_loss_weight": 1.0,
    }
    values.update(extra)
    return LocalTraining.from_hparams(values)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32)


def _labeled(n: int) -> ArraySplit:
    return ArraySplit(x=_images(n, 1), y=(np.arange(n) % 2).astype(np.int64))


def _fit(training: LocalTraining, labeled: ArraySplit, seed: int = 0) -> tuple[dict, dict]:
    task = _task()
    model = task.build_model(seed=0)
    result = task.fit_semi_supervised(
        model=model,
        labeled=labeled,
        unlabeled=_images(20, 2),
        training=training,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )
    return params_copy(model), {"steps": result.num_steps, **result.metrics}


def test_an_unlabeled_only_round_reports_no_supervised_loss_and_counts_its_images() -> None:
    _, metrics = _fit(_training(), _labeled(0))
    assert Metric.LOSS not in metrics
    assert metrics[TrainMetric.NUM_LABELED] == 0 and metrics[TrainMetric.NUM_UNLABELED] == 20
    assert metrics[TrainMetric.PSEUDO_LABEL_RATE] == 1.0  # threshold 0: every image is used
    assert metrics["steps"] == 3  # ceil(20 / 8) steps for one epoch over the unlabeled images


def test_a_mixed_round_reports_the_supervised_loss_and_passes_over_the_larger_set() -> None:
    _, metrics = _fit(_training(), _labeled(4))
    assert np.isfinite(metrics[Metric.LOSS])
    assert metrics["steps"] == 3  # the 4 labeled images cycle while 20 unlabeled are seen once


def test_the_same_generator_seed_gives_the_same_weights_bit_for_bit() -> None:
    a, _ = _fit(_training(), _labeled(4), seed=5)
    b, _ = _fit(_training(), _labeled(4), seed=5)
    c, _ = _fit(_training(), _labeled(4), seed=6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_no_confident_prediction_means_no_unlabeled_gradient() -> None:
    # Threshold 1.0 cannot be reached by a softmax over 2 untrained classes: all masked.
    start = params_copy(_task().build_model(seed=0))
    after, metrics = _fit(_training(threshold=1.0), _labeled(0))
    assert metrics[TrainMetric.PSEUDO_LABEL_RATE] == 0.0
    assert metrics[TrainMetric.UNLABELED_LOSS] == 0.0
    assert metrics[TrainMetric.NUM_UNLABELED] == 0  # no image was trained on
    assert metrics["steps"] == 0  # no step taken: a zero loss must not move the weights
    assert all(np.array_equal(start[k], after[k]) for k in start)


def test_a_step_without_a_confident_image_is_skipped_even_with_adam_and_weight_decay() -> None:
    # Adam with weight decay moves every weight on a zero loss; a skipped step does not.
    start = params_copy(_task().build_model(seed=0))
    training = _training(threshold=1.0, optimizer="adam", weight_decay=0.1)
    after, metrics = _fit(training, _labeled(0))
    assert metrics["steps"] == 0
    assert all(np.array_equal(start[k], after[k]) for k in start)


@pytest.mark.parametrize("method", ["fixmatch", "pseudo_label"])
def test_confident_pseudo_labels_move_the_model(method: str) -> None:
    start = params_copy(_task().build_model(seed=0))
    after, metrics = _fit(_training(method), _labeled(0))
    assert metrics[TrainMetric.UNLABELED_LOSS] > 0
    assert any(not np.array_equal(start[k], after[k]) for k in start)


def test_zero_unlabeled_weight_trains_like_the_labeled_loss_alone() -> None:
    # With lambda = 0 the unlabeled branch adds nothing to the gradient.
    weightless, _ = _fit(_training(unlabeled_loss_weight=0.0), _labeled(0))
    start = params_copy(_task().build_model(seed=0))
    assert all(np.array_equal(start[k], weightless[k]) for k in start)


def test_semi_supervised_settings_out_of_range_are_refused_by_name() -> None:
    from flmi.tasks.base import HParamError

    with pytest.raises(HParamError, match="pseudo_label_threshold"):
        _training(threshold=1.5)
    with pytest.raises(HParamError, match="unlabeled_loss_weight"):
        _training(unlabeled_loss_weight=-1.0)
    with pytest.raises(HParamError, match="semi_supervised"):
        _training(method="mixmatch")


@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (3, 1, 8, 8, 8)])
def test_strong_augmentation_is_seeded_and_keeps_shape_and_dtype(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    a = strong_augment(x, generator=torch.Generator().manual_seed(1))
    b = strong_augment(x, generator=torch.Generator().manual_seed(1))
    c = strong_augment(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, x, atol=1e-3)
    assert torch.isfinite(a).all()


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is their brightness: easy to become confident about."""
    y = (np.arange(n) % 2).astype(np.int64)
    noise = np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32) * 0.1
    return noise + y.reshape(n, 1, 1, 1).astype(np.float32), y


def _fit_separable(training: LocalTraining, seed: int = 0) -> tuple[dict, float]:
    x, y = _separable(8, 1)
    task = _task()
    model = task.build_model(seed=0)
    result = task.fit_semi_supervised(
        model=model,
        labeled=ArraySplit(x=x, y=y),
        unlabeled=_separable(20, 2)[0],
        training=training,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )
    return params_copy(model), result.metrics[TrainMetric.PSEUDO_LABEL_RATE]


#: Adam steps after which the local model is confident on the separable images.
CONFIDENT: dict[str, float | str] = {"optimizer": "adam", "lr": 0.01, "local_steps": 30}


def test_a_global_teacher_labels_with_the_received_weights_not_the_moving_ones() -> None:
    # The untrained model is never 0.9 confident; after a few labeled Adam steps
    # the local model is. A local teacher then hands out pseudo-labels, while the
    # frozen copy of the received weights still does not.
    with torch.no_grad():
        start = _task().build_model(seed=0)
        untrained = torch.softmax(start(torch.from_numpy(_separable(20, 2)[0])), dim=1)
    assert float(untrained.max()) < 0.9
    _, local_rate = _fit_separable(_training(threshold=0.9, **CONFIDENT))
    _, global_rate = _fit_separable(
        _training(threshold=0.9, pseudo_label_teacher="global", **CONFIDENT)
    )
    assert local_rate > 0
    assert global_rate == 0.0


def test_a_global_teacher_round_is_reproducible_and_differs_from_a_local_teacher() -> None:
    teacher = _training(threshold=0.9, pseudo_label_teacher="global", **CONFIDENT)
    a, _ = _fit_separable(teacher, seed=3)
    b, _ = _fit_separable(teacher, seed=3)
    local, _ = _fit_separable(_training(threshold=0.9, **CONFIDENT), seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], local[k]) for k in a)


def test_the_frozen_teacher_is_a_detached_copy_in_evaluation_mode() -> None:
    model = _task().build_model(seed=0)
    model.train()
    teacher = frozen_teacher(model)
    assert not teacher.training and model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(teacher.parameters()))
    assert {p.device for p in teacher.parameters()} == {p.device for p in model.parameters()}


def test_distribution_alignment_moves_an_average_prediction_to_uniform() -> None:
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.02, 0.98]])
    mean = torch.tensor([0.2, 0.8])
    aligned = align(probs, mean)
    torch.testing.assert_close(aligned.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(aligned[0], torch.tensor([0.5, 0.5]))
    assert int(aligned[1].argmax()) == 0 and float(aligned[1, 0]) > 0.6  # minority gains
    assert int(aligned[2].argmax()) == 1  # a clear majority-class image stays one
    # A class the teacher never predicts stays at 0 instead of dividing by zero.
    never = align(torch.tensor([[0.0, 1.0]]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(never).all() and float(never[0, 0]) == 0.0


def test_the_mean_prediction_covers_every_image_and_restores_the_mode() -> None:
    task = _task()
    model = task.build_model(seed=0)
    model.train()
    images = torch.from_numpy(_images(11, 4))
    mean = mean_prediction(
        net=model,
        images=images,
        batch_size=4,
        device=torch.device("cpu"),
        probs_fn=lambda z: torch.softmax(z, dim=1),
    )
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(images), dim=1).mean(dim=0)
    torch.testing.assert_close(mean, expected)
    model.train()
    assert model.training


def test_distribution_alignment_changes_the_pseudo_labels_and_stays_reproducible() -> None:
    aligned = _training(threshold=0.5, distribution_alignment=1, local_steps=6)
    a, ma = _fit(aligned, _labeled(0), seed=2)
    b, _ = _fit(aligned, _labeled(0), seed=2)
    plain, _ = _fit(_training(threshold=0.5, local_steps=6), _labeled(0), seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], plain[k]) for k in a)
    assert 0 < ma[TrainMetric.PSEUDO_LABEL_RATE] <= 1


def test_an_unknown_teacher_is_refused_by_name() -> None:
    from flmi.tasks.base import HParamError

    with pytest.raises(HParamError, match="pseudo_label_teacher"):
        _training(pseudo_label_teacher="ema")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("selection", ["threshold", "class_quota"])
def test_a_global_teacher_with_alignment_trains_on_the_chosen_device(selection: str) -> None:
    task = _task()
    model = task.build_model(seed=0).to("cuda")
    training = _training(
        threshold=0.5,
        pseudo_label_teacher="global",
        distribution_alignment=1,
        pseudo_label_selection=selection,
        soft_pseudo_labels=1,
    )
    result = task.fit_semi_supervised(
        model=model,
        labeled=_labeled(4),
        unlabeled=_images(20, 2),
        training=training,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cuda"),
    )
    assert result.num_steps > 0
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_soft_cross_entropy_matches_the_hard_one_on_one_hot_targets() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-3.0, 1.0]])
    hard = torch.tensor([0, 1, 1])
    one_hot = torch.nn.functional.one_hot(hard, 2).to(logits.dtype)
    soft = soft_cross_entropy(
        logits=logits, targets=one_hot, probs_fn=lambda z: torch.softmax(z, dim=1)
    )
    torch.testing.assert_close(
        soft, torch.nn.functional.cross_entropy(logits, hard, reduction="none")
    )
    # A target distribution is matched best by predicting that same distribution.
    target = torch.tensor([[0.7, 0.3]])
    match = torch.log(target)
    worse = torch.tensor([[5.0, -5.0]])
    probs = lambda z: torch.softmax(z, dim=1)  # noqa: E731
    assert soft_cross_entropy(logits=match, targets=target, probs_fn=probs) < soft_cross_entropy(
        logits=worse, targets=target, probs_fn=probs
    )


def test_soft_pseudo_labels_train_another_model_reproducibly() -> None:
    soft = _training(threshold=0.0, soft_pseudo_labels=1, local_steps=4)
    a, metrics = _fit(soft, _labeled(0), seed=1)
    b, _ = _fit(soft, _labeled(0), seed=1)
    hard, _ = _fit(_training(threshold=0.0, local_steps=4), _labeled(0), seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], hard[k]) for k in a)
    assert metrics[TrainMetric.PSEUDO_LABEL_RATE] == 1.0 and metrics[TrainMetric.UNLABELED_LOSS] > 0


#: Teacher probabilities of class 0 for 8 images, in no particular order; their
#: mean is 0.75, so an image's aligned prediction is class 0 exactly when p0 > 0.75.
HAND_MADE_P0 = [0.8, 0.3, 0.99, 0.5, 0.84, 0.7, 0.97, 0.9]


def _hand_made() -> torch.Tensor:
    p0 = torch.tensor(HAND_MADE_P0, dtype=torch.float64)
    return torch.stack([p0, 1 - p0], dim=1)


def test_the_class_quota_takes_each_classs_most_confident_images_in_prior_proportion() -> None:
    chosen, target = class_quota_selection(probs=_hand_made(), quota=0.5)
    # Class 0 holds the images with p0 0.8, 0.99, 0.84, 0.97, 0.9; class 1 the rest.
    assert target.tolist() == [0, 1, 0, 1, 0, 1, 0, 0]
    # 4 pseudo-labels: 0.5 * 8 * 0.75 = 3 of class 0 (p0 0.99, 0.97, 0.9) and
    # 0.5 * 8 * 0.25 = 1 of class 1 (p1 0.7, the image with p0 0.3).
    assert torch.nonzero(chosen).flatten().tolist() == [1, 2, 6, 7]
    # A class holding fewer images than its quota gives all of them: 6 asked, 5 held.
    everything, _ = class_quota_selection(probs=_hand_made(), quota=1.0)
    assert everything.tolist() == [True, True, True, True, True, False, True, True]


def test_a_single_threshold_after_alignment_gives_the_minority_class_nothing_here() -> None:
    probs = _hand_made()
    confidence, target = align(probs, probs.mean(dim=0)).max(dim=1)
    picked = confidence >= 0.95
    assert target[picked].tolist() == [0]  # one majority image, no minority one
    chosen, quota_target = class_quota_selection(probs=probs, quota=0.5)
    assert set(quota_target[chosen].tolist()) == {0, 1}


def test_the_class_quota_breaks_ties_by_index_and_refuses_a_quota_out_of_range() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    chosen, _ = class_quota_selection(probs=probs, quota=0.5)
    # Prior 0.7 / 0.3: round(1.4) = 1 image of class 0 (the first of the tie),
    # round(0.6) = 1 of class 1.
    assert chosen.tolist() == [True, False, False, True]
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="pseudo_label_quota"):
            class_quota_selection(probs=probs, quota=bad)


def test_class_quota_training_is_reproducible_and_labels_the_quota_share() -> None:
    quota = _training(
        threshold=0.99,
        pseudo_label_teacher="global",
        pseudo_label_selection="class_quota",
        pseudo_label_quota=0.5,
        local_steps=5,
    )
    a, metrics = _fit(quota, _labeled(0), seed=4)
    b, again = _fit(quota, _labeled(0), seed=4)
    threshold, _ = _fit(_training(threshold=0.5, local_steps=5), _labeled(0), seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a) and metrics == again
    assert not all(np.array_equal(a[k], threshold[k]) for k in a)
    # The threshold (0.99, never reached by a fresh model) no longer decides:
    # 10 of the 20 unlabeled images carry a pseudo-label all round.
    assert metrics[TrainMetric.NUM_UNLABELED] == 10
    assert metrics["steps"] == 5 and 0 < metrics[TrainMetric.PSEUDO_LABEL_RATE] < 1


def test_an_unknown_selection_or_a_quota_out_of_range_is_refused_by_name() -> None:
    from flmi.tasks.base import HParamError

    with pytest.raises(HParamError, match="pseudo_label_selection"):
        _training(pseudo_label_selection="flexmatch")
    with pytest.raises(HParamError, match="pseudo_label_quota"):
        _training(pseudo_label_selection="class_quota", pseudo_label_quota=0.0)
