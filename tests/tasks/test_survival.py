"""The Cox task: Breslow partial likelihood by hand and against lifelines, C-index, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from flmi.core.errors import ConfigError, LabelError
from flmi.data.arrays import ArraySplit
from flmi.tasks.base import LocalTraining
from flmi.tasks.survival import CoxTask, c_index, cox_loss

CPU = torch.device("cpu")


def _target(events: list[float], times: list[float]) -> torch.Tensor:
    return torch.tensor(np.stack([events, times], axis=1), dtype=torch.float64)


def test_cox_loss_matches_the_breslow_sum_worked_by_hand() -> None:
    risk = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    target = _target([1, 1, 0, 1], [1.0, 2.0, 2.0, 3.0])
    r = risk.numpy()
    by_hand = (
        (
            (np.log(np.exp(r).sum()) - r[0])  # t=1: everyone at risk
            + (np.log(np.exp(r[1:]).sum()) - r[1])  # t=2: the tied censored patient is at risk
            + 0.0  # t=3: alone in its risk set
        )
        / 4
    )

    assert float(cox_loss(risk, target)) == pytest.approx(by_hand, abs=1e-12)


def test_tied_events_share_one_risk_set_under_breslow() -> None:
    risk = torch.tensor([0.7, -0.4], dtype=torch.float64)
    target = _target([1, 1], [5.0, 5.0])
    r = risk.numpy()
    denominator = np.log(np.exp(r).sum())

    expected = ((denominator - r[0]) + (denominator - r[1])) / 2
    assert float(cox_loss(risk, target)) == pytest.approx(expected, abs=1e-12)


def test_a_batch_without_events_has_zero_loss() -> None:
    loss = cox_loss(torch.tensor([1.0, 2.0]), _target([0, 0], [1.0, 2.0]).float())
    assert float(loss) == 0.0


def test_minimising_the_loss_gives_lifelines_cox_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    hazard = np.exp(x @ np.array([0.8, -0.5]))
    time = rng.exponential(1 / hazard)
    censor = rng.exponential(2.0, size=300)
    event = (time <= censor).astype(np.float64)
    observed = np.minimum(time, censor)  # continuous: no ties, so Breslow = Efron
    reference = CoxPHFitter().fit(
        pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "T": observed, "E": event}), "T", "E"
    )
    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [beta], max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe"
    )
    xt, target = torch.from_numpy(x), _target(list(event), list(observed))

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = cox_loss(xt @ beta, target)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimiser.step(closure)  # type: ignore[no-untyped-call]

    np.testing.assert_allclose(beta.detach().numpy(), reference.params_.to_numpy(), atol=1e-4)


def test_c_index_is_lifelines_with_risk_negated_and_nan_without_comparable_pairs() -> None:
    target = np.array([[1, 2.0], [0, 5.0], [1, 3.0], [1, 9.0]])
    risk = np.array([0.9, 0.1, 0.5, -0.3])

    assert c_index(target=target, risk=risk) == concordance_index([2, 5, 3, 9], -risk, [1, 0, 1, 1])
    assert c_index(target=target, risk=risk) == 1.0  # higher risk, earlier event, every time
    assert math.isnan(c_index(target=np.array([[0, 1.0], [0, 2.0]]), risk=np.array([1.0, 0.0])))


def _rows(n: int, seed: int) -> ArraySplit:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    time = rng.exponential(1 / np.exp(x @ np.array([1.0, 0.0, -1.0])))
    event = (rng.random(n) < 0.7).astype(np.float64)
    return ArraySplit(x=x.astype(np.float32), y=np.stack([event, time], axis=1).astype(np.float32))


def test_local_training_raises_the_c_index_and_intervals_hold_it() -> None:
    task, train, test = CoxTask(in_channels=3, spatial_dims=0), _rows(300, 0), _rows(150, 1)
    model = task.build_model(seed=0)
    training = LocalTraining(
        lr=0.1,
        local_epochs=1,
        local_steps=200,
        batch_size=8,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
    )

    task.fit(
        model=model,
        data=train,
        training=training,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    metrics = task.evaluate(model=model, data=test, device=CPU)
    ci = task.confidence_intervals(model=model, data=test, device=CPU, resamples=100, seed=0)

    assert metrics["c_index"] > 0.75
    assert ci["c_index"][0] <= metrics["c_index"] <= ci["c_index"][1]


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([1.0, 2.0]), r"must be \(N, 2\) rows \[event, time\]"),
        (np.array([[2.0, 1.0], [0.0, 1.0]]), "event indicator is not 0 or 1"),
        (np.array([[1.0, -1.0], [0.0, 1.0]]), "follow-up time is missing or negative"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "follow-up time is missing or negative"),
    ],
)
def test_bad_survival_targets_are_refused_with_the_place_named(y: np.ndarray, match: str) -> None:
    data = ArraySplit(x=np.zeros((2, 3), np.float32), y=y.astype(np.float32))
    with pytest.raises(LabelError, match=f"site 'a' train: .*{match}|{match}"):
        CoxTask(in_channels=3, spatial_dims=0).check_labels(data=data, where="site 'a' train")


def test_images_are_refused_by_the_linear_cox_model() -> None:
    with pytest.raises(ConfigError, match="takes feature vectors"):
        CoxTask(in_channels=1, spatial_dims=2)
