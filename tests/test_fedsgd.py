"""FedAvg with one full-batch step per site equals one step of pooled gradient descent."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from flmi.core.federation import FederationPlan, RoundRecord, run_federation
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.runtime.inprocess import InProcessRuntime
from flmi.site.site import Site
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy

LR = 0.1


class Ignore:
    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        pass


def _split(rng: np.random.Generator, n: int) -> ArraySplit:
    return ArraySplit(
        x=rng.normal(size=(n, 1, 8, 8)), y=rng.integers(0, 3, size=n).astype(np.int64)
    )


def test_one_fedavg_round_of_full_batch_steps_equals_pooled_gradient_descent() -> None:
    # Arrange: float64, GroupNorm (no BatchNorm), no dropout, sites of unequal size.
    rng = np.random.default_rng(0)
    task = ClassificationTask(
        num_classes=3, in_channels=1, spatial_dims=2, positive_label=0, width=4, dtype="float64"
    )
    splits = {name: _split(rng, n) for name, n in [("a", 7), ("b", 13), ("c", 30)]}
    cpu = torch.device("cpu")
    sites = [
        Site(name=name, data=SiteSplits(train=s, val=s, test=s), task=task, seed=0, device=cpu)
        for name, s in splits.items()
    ]
    model = task.build_model(seed=1)
    initial = params_copy(model)
    hparams = {"lr": LR, "batch_size": 1000, "local_epochs": 1, "optimizer": "sgd", "momentum": 0.0}

    # Act: one federated round.
    result = run_federation(
        strategy=FedAvg(hparams=hparams),
        runtime=InProcessRuntime(sites=sites),
        initial_params=initial,
        plan=FederationPlan(rounds=1, fraction=1.0, min_sites=3, seed=0),
        observer=Ignore(),
    )

    # Act: one full-batch gradient step on the pooled data.
    x = torch.from_numpy(np.concatenate([s.x for s in splits.values()]))
    y = torch.from_numpy(np.concatenate([s.y for s in splits.values()]))
    model.train()
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad  # type: ignore[operator]
    expected = params_copy(model)

    # Assert
    assert set(result.params) == set(expected)
    for name in expected:
        assert result.params[name].dtype == np.float64
        np.testing.assert_allclose(
            result.params[name], expected[name], rtol=0, atol=1e-9, err_msg=name
        )
    moved = max(float(np.abs(expected[k] - initial[k]).max()) for k in expected)
    assert moved > 1e-4  # the step really changed the weights
