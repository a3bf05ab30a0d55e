"""One forward pass serves a split's metrics, intervals and histogram, and never stale weights."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import torch

from flmi.data.arrays import ArraySplit
from flmi.tasks.classification import ClassificationTask

CPU = torch.device("cpu")


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _data(seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    x = rng.random((30, 1, 8, 8), dtype=np.float32)
    return ArraySplit(x=x, y=rng.integers(0, 2, 30).astype(np.int64))


def _counting(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_metrics_intervals_and_histogram_of_one_split_share_one_forward_pass() -> None:
    task, data = _task(), _data()
    model = task.build_model(seed=0)
    calls = _counting(model)
    task.evaluate(model=model, data=data, device=CPU)
    task.confidence_intervals(model=model, data=data, device=CPU, resamples=50, seed=0)
    task.score_histogram(model=model, data=data, device=CPU, bins=10)
    assert len(calls) == 1


def test_new_weights_or_another_split_are_predicted_afresh() -> None:
    task, data, other = _task(), _data(0), _data(1)
    model = task.build_model(seed=0)
    first = task.predict_proba(model=model, x=data.x, device=CPU)[0].copy()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # what loading other weights in place does
    changed = task.predict_proba(model=model, x=data.x, device=CPU)[0]
    fresh = _task().predict_proba(model=model, x=data.x, device=CPU)[0]
    assert not np.array_equal(first, changed) and np.array_equal(changed, fresh)
    calls = _counting(model)
    task.predict_proba(model=model, x=other.x, device=CPU)
    task.predict_proba(model=task.build_model(seed=1), x=other.x, device=CPU)
    assert len(calls) == 1  # the second model has no hook; the first ran once for `other`


def test_returned_probabilities_cannot_be_written_over() -> None:
    task, data = _task(), _data()
    probs = task.predict_proba(model=task.build_model(seed=0), x=data.x, device=CPU)[0]
    assert not probs.flags.writeable


def test_a_copied_or_pickled_task_remembers_nothing() -> None:
    task, data = _task(), _data()
    model = task.build_model(seed=0)
    task.predict_proba(model=model, x=data.x, device=CPU)
    for clone in (copy.deepcopy(task), pickle.loads(pickle.dumps(task))):
        calls = _counting(model)
        clone.predict_proba(model=model, x=data.x, device=CPU)
        assert len(calls) == 1
