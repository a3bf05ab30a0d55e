"""A site with unlabeled training images: what it trains on and what it reports."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from flmi.core.keys import Metric, TrainMetric
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainInstruction
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.site.site import Site
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: tiny models train fastest that way on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


HPARAMS = {"lr": 0.05, "batch_size": 8, "local_epochs": 1, "optimizer": "sgd", "momentum": 0.9}
SSL = {"semi_supervised": "fixmatch", "pseudo_label_threshold": 0.5, "unlabeled_loss_weight": 1.0}


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _site(n_labeled: int, n_unlabeled: int) -> Site:
    rng = np.random.default_rng(0)
    labeled = ArraySplit(
        x=rng.random((n_labeled, 1, 8, 8), dtype=np.float32),
        y=rng.integers(0, 2, n_labeled).astype(np.int64),
    )
    evaluation = ArraySplit(
        x=rng.random((6, 1, 8, 8), dtype=np.float32), y=np.array([0, 1] * 3, dtype=np.int64)
    )
    unlabeled = rng.random((n_unlabeled, 1, 8, 8), dtype=np.float32) if n_unlabeled else None
    return Site(
        name="h1",
        data=SiteSplits(train=labeled, val=evaluation, test=evaluation, unlabeled=unlabeled),
        task=_task(),
        seed=0,
        device=torch.device("cpu"),
    )


def _instruction(**hparams: float | int | str) -> TrainInstruction:
    return TrainInstruction(
        rnd=1, params=params_copy(_task().build_model(seed=1)), hparams={**HPARAMS, **hparams}
    )


def test_an_unlabeled_site_sends_its_image_count_and_no_supervised_metric() -> None:
    reply = _site(0, 20).train(_instruction(**SSL))
    assert isinstance(reply, ClientUpdate)
    assert reply.num_examples == 20 and reply.num_steps == 3
    assert Metric.LOSS not in reply.metrics
    assert reply.metrics[TrainMetric.NUM_UNLABELED] == 20
    assert set(reply.metrics) <= {m.value for m in TrainMetric}


def test_a_partly_labeled_site_counts_labeled_and_unlabeled_examples() -> None:
    reply = _site(5, 15).train(_instruction(**SSL))
    assert isinstance(reply, ClientUpdate)
    assert reply.num_examples == 20
    assert np.isfinite(reply.metrics[Metric.LOSS])


def test_without_semi_supervision_unlabeled_images_are_left_unused_and_uncounted() -> None:
    mixed = _site(5, 15).train(_instruction())
    assert isinstance(mixed, ClientUpdate)
    assert mixed.num_examples == 5 and mixed.num_steps == 1
    assert TrainMetric.NUM_UNLABELED not in mixed.metrics


def test_a_site_with_no_label_refuses_supervised_training_with_a_code() -> None:
    reply = _site(0, 20).train(_instruction())
    assert isinstance(reply, ClientError)
    assert reply.code == ErrorCode.DATA_ERROR and "semi_supervised" in reply.message


def test_a_labeled_site_trains_exactly_as_before_when_semi_supervision_is_on() -> None:
    with_ssl = _site(20, 0).train(_instruction(**SSL))
    without = _site(20, 0).train(_instruction())
    assert isinstance(with_ssl, ClientUpdate) and isinstance(without, ClientUpdate)
    assert all(np.array_equal(with_ssl.params[k], without.params[k]) for k in without.params)
    assert with_ssl.metrics == without.metrics and with_ssl.num_examples == 20


def test_an_unlabeled_site_with_no_confident_image_sends_nothing_but_a_code() -> None:
    ssl = {**SSL, "pseudo_label_threshold": 1.0}
    reply = _site(0, 20).train(_instruction(**ssl))
    assert isinstance(reply, ClientError)
    assert reply.code == ErrorCode.DATA_ERROR and "pseudo_label_threshold" in reply.message
