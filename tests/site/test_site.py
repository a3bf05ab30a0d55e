from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    TrainInstruction,
)
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.site.site import Site, SitePolicy
from flmi.site.state import SiteState
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy

HPARAMS = {"lr": 0.05, "batch_size": 8, "local_epochs": 1, "optimizer": "sgd", "momentum": 0.9}


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _splits(x: np.ndarray | None = None) -> SiteSplits:
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=x if x is not None else rng.random((20, 1, 8, 8), dtype=np.float32),
        y=rng.integers(0, 2, 20).astype(np.int64),
    )
    return SiteSplits(train=data, val=data, test=data)


def _site(
    tmp: Path | None = None, *, policy: SitePolicy | None = None, x: np.ndarray | None = None
) -> Site:
    return Site(
        name="h1",
        data=_splits(x),
        task=_task(),
        seed=0,
        device=torch.device("cpu"),
        policy=policy,
        state_dir=tmp,
    )


def _instruction(rnd: int = 1, **hparams: float | int | str) -> TrainInstruction:
    return TrainInstruction(
        rnd=rnd, params=params_copy(_task().build_model(seed=1)), hparams={**HPARAMS, **hparams}
    )


def test_training_returns_an_update_with_counts_and_moved_weights() -> None:
    instruction = _instruction()
    reply = _site().train(instruction)
    assert isinstance(reply, ClientUpdate)
    assert reply.site == "h1" and reply.num_examples == 20 and reply.num_steps == 3
    assert any(not np.array_equal(reply.params[k], v) for k, v in instruction.params.items())


def test_the_same_round_trains_to_the_same_weights_and_another_round_does_not() -> None:
    a, b, c = (
        _site().train(_instruction(1)),
        _site().train(_instruction(1)),
        _site().train(_instruction(2)),
    )
    assert (
        isinstance(a, ClientUpdate) and isinstance(b, ClientUpdate) and isinstance(c, ClientUpdate)
    )
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not all(np.array_equal(a.params[k], c.params[k]) for k in a.params)


def test_update_does_not_change_when_the_site_trains_again() -> None:
    site = _site()
    first = site.train(_instruction(1))
    assert isinstance(first, ClientUpdate)
    kept = {k: v.copy() for k, v in first.params.items()}
    site.train(_instruction(2))
    assert all(np.array_equal(first.params[k], kept[k]) for k in kept)


def test_site_refuses_more_local_epochs_than_its_bound() -> None:
    reply = _site(policy=SitePolicy(max_local_epochs=2)).train(_instruction(local_epochs=5))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert "local_epochs = 5 exceeds this site's bound of 2" in reply.message


@pytest.mark.parametrize(
    ("key", "value"), [("lr", -1.0), ("batch_size", 0), ("optimizer", "lbfgs"), ("secret", 1)]
)
def test_site_refuses_invalid_hparams_naming_them(key: str, value: float | str) -> None:
    reply = _site().train(_instruction(**{key: value}))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert key in reply.message


def test_site_refuses_weights_that_do_not_fit_its_model() -> None:
    instruction = _instruction()
    del instruction.params["head.bias"]
    reply = _site().train(instruction)
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.SCHEMA_MISMATCH
    assert "head.bias" in reply.message


def test_site_refuses_to_send_a_non_finite_update() -> None:
    x = np.full((20, 1, 8, 8), np.nan, dtype=np.float32)  # corrupted local data
    reply = _site(x=x).train(_instruction())
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.NON_FINITE_UPDATE


def test_evaluation_returns_aggregate_metrics_only() -> None:
    site = _site()
    reply = site.evaluate(EvaluateInstruction(rnd=1, params=_instruction().params, split="test"))
    assert not isinstance(reply, ClientError)
    assert reply.num_examples == 20 and set(reply.metrics) >= {"auc", "loss"}


def test_site_state_is_saved_atomically_and_reloaded(tmp_path: Path) -> None:
    state = SiteState(tensors={"c": np.arange(4, dtype=np.float32)}, meta={"round": 3})
    state.save(tmp_path)
    loaded = SiteState.load(tmp_path)
    np.testing.assert_array_equal(loaded.tensors["c"], state.tensors["c"])
    assert loaded.meta == {"round": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "site_state-00003.json",
        "site_state-00003.safetensors",
    ]


def test_site_state_keeps_two_rounds_and_loads_the_newest_up_to_a_round(tmp_path: Path) -> None:
    for rnd in (1, 2, 3):
        SiteState(tensors={"c": np.full(2, rnd, np.float32)}, meta={"round": rnd}).save(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert SiteState.load(tmp_path).round == 3
    assert SiteState.load(tmp_path, max_round=2).round == 2
    np.testing.assert_array_equal(SiteState.load(tmp_path, max_round=2).tensors["c"], [2, 2])
    assert SiteState.load(tmp_path, max_round=1).tensors == {}  # round 1 was pruned


def test_site_with_nothing_to_keep_writes_no_state_file(tmp_path: Path) -> None:
    site = _site(tmp_path)
    site.train(_instruction(4))
    assert site.state.round == 4 and site.state.holds_nothing
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
    assert _site(tmp_path).state == SiteState()


def test_site_with_a_saved_state_saves_it_as_of_each_new_round(tmp_path: Path) -> None:
    SiteState(tensors={"c": np.ones(2, np.float32)}, meta={"round": 3}).save(tmp_path)
    _site(tmp_path).train(_instruction(4))
    loaded = SiteState.load(tmp_path)
    assert loaded.round == 4
    np.testing.assert_array_equal(loaded.tensors["c"], [1.0, 1.0])


def test_sites_sharing_one_model_train_exactly_as_sites_with_their_own() -> None:
    shared = _task().build_model(seed=9)
    own = [
        Site(name=f"h{i}", data=_splits(), task=_task(), seed=0, device=torch.device("cpu"))
        for i in range(2)
    ]
    pooled = [
        Site(
            name=f"h{i}",
            data=_splits(),
            task=_task(),
            seed=0,
            device=torch.device("cpu"),
            model=shared,
        )
        for i in range(2)
    ]
    for rnd in (1, 2):
        for a, b in zip(own, pooled, strict=True):
            ua, ub = a.train(_instruction(rnd)), b.train(_instruction(rnd))
            assert isinstance(ua, ClientUpdate) and isinstance(ub, ClientUpdate)
            assert all(np.array_equal(ua.params[k], ub.params[k]) for k in ua.params)


class _LeakyTask(ClassificationTask):
    """A task whose training fails with a message holding a path and a patient name."""

    def fit(self, **kwargs):  # type: ignore[no-untyped-def,override]
        raise FileNotFoundError("/hospital/pacs/DOE^JANE/series_17/slice_003.dcm")


def test_training_failure_reports_a_code_and_no_path_or_patient_data() -> None:
    task = _LeakyTask(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4)
    site = Site(name="h1", data=_splits(), task=task, seed=0, device=torch.device("cpu"))
    reply = site.train(_instruction())
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.TRAINING_FAILED
    assert "DOE" not in reply.message and "/" not in reply.message and ".dcm" not in reply.message


def test_scaffold_site_sends_delta_c_and_keeps_its_variate_between_rounds() -> None:
    from flmi.core.keys import Extra

    site = _site()
    instruction = _instruction(momentum=0.0, client_algorithm="scaffold")
    zeros = {Extra.SCAFFOLD_C + k: np.zeros_like(v) for k, v in instruction.params.items()}
    first = site.train(
        TrainInstruction(
            rnd=1, params=instruction.params, hparams=instruction.hparams, extras=zeros
        )
    )
    assert isinstance(first, ClientUpdate)
    sent = {k for k in first.extras if k.startswith(Extra.SCAFFOLD_DELTA_C)}
    assert sent == {Extra.SCAFFOLD_DELTA_C + k for k in instruction.params}
    kept = {k: v for k, v in site.state.tensors.items() if k.startswith(Extra.SCAFFOLD_C)}
    assert len(kept) == len(instruction.params)
    # on its first round c_i was 0, so delta c equals the new c_i
    for name in instruction.params:
        np.testing.assert_allclose(
            first.extras[Extra.SCAFFOLD_DELTA_C + name], kept[Extra.SCAFFOLD_C + name]
        )


def test_scaffold_without_the_server_variate_is_refused_naming_the_tensor() -> None:
    reply = _site().train(_instruction(momentum=0.0, client_algorithm="scaffold"))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.SCHEMA_MISMATCH


def test_proximal_term_keeps_weights_closer_to_the_global_model() -> None:
    instruction = _instruction()
    free = _site().train(instruction)
    held = _site().train(_instruction(prox_mu=10.0))
    assert isinstance(free, ClientUpdate) and isinstance(held, ClientUpdate)

    def distance(update: ClientUpdate) -> float:
        return sum(
            float(((update.params[k] - v) ** 2).sum()) for k, v in instruction.params.items()
        )

    assert distance(held) < distance(free)
