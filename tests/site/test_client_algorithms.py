"""Client algorithms as plug-ins: FedDyn's and MOON's client sides, and a user's own."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from flmi.core.keys import Extra
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainInstruction
from flmi.core.params import Params
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.registry import PluginError, Registry
from flmi.site.algorithms import (
    ClientAlgorithm,
    ClientStep,
    LocalSite,
    LocalUpdate,
    PassStep,
    RoundContext,
    register_client_algorithm,
)
from flmi.site.algorithms import registry as client_registry
from flmi.site.algorithms.feddyn import FedDyn
from flmi.site.algorithms.moon import RepresentationTap, final_linear, moon_loss
from flmi.site.site import Site
from flmi.site.state import SiteState
from flmi.tasks.base import FitHooks, FitResult, HParamError, LocalTraining
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy

HPARAMS = {"lr": 0.05, "batch_size": 8, "local_epochs": 1, "optimizer": "sgd", "momentum": 0.9}


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _site(tmp: Path | None = None) -> Site:
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=rng.random((20, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 20).astype(np.int64)
    )
    return Site(
        name="h1",
        data=SiteSplits(train=data, val=data, test=data),
        task=_task(),
        seed=0,
        device=torch.device("cpu"),
        state_dir=tmp,
    )


def _instruction(
    rnd: int = 1, params: Params | None = None, **hparams: float | str
) -> TrainInstruction:
    return TrainInstruction(
        rnd=rnd,
        params=params if params is not None else params_copy(_task().build_model(seed=1)),
        hparams={**HPARAMS, **hparams},
    )


# ---------------------------------------------------------------- MOON


def test_moon_loss_worked_by_hand() -> None:
    # Row 1: sim(z, z_glob) = 1, sim(z, z_prev) = 0, tau = 0.5 -> logits (2, 0):
    #        -log(e^2 / (e^2 + 1)) = log(1 + e^-2).
    # Row 2: both similarities 1 -> logits (2, 2): log 2. The loss is the batch mean.
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_global = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    z_previous = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    loss = moon_loss(z, z_global, z_previous, temperature=0.5)
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_the_representation_is_the_input_of_the_last_linear_layer() -> None:
    model = _task().build_model(seed=0)
    x = torch.rand(3, 1, 8, 8)
    tap = RepresentationTap(model)
    model(x)
    tap.close()
    assert tap.inputs is x
    assert tap.features is not None
    torch.testing.assert_close(tap.features, model.features(x), rtol=0, atol=0)
    assert not model._forward_pre_hooks and not model.head._forward_pre_hooks


def test_a_network_without_a_linear_layer_is_refused_for_moon() -> None:
    with pytest.raises(HParamError, match="ends in a linear layer"):
        final_linear(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()))


def test_moon_with_mu_zero_trains_exactly_as_fedavg_and_keeps_its_model() -> None:
    plain = _site().train(_instruction())
    site = _site()
    moon = site.train(_instruction(client_algorithm="moon", moon_mu=0.0))
    assert isinstance(plain, ClientUpdate) and isinstance(moon, ClientUpdate)
    assert all(np.array_equal(plain.params[k], moon.params[k]) for k in plain.params)
    kept = {k[len(Extra.MOON_PREVIOUS) :]: v for k, v in site.state.tensors.items()}
    assert set(kept) == set(moon.params)
    assert all(np.array_equal(kept[k], moon.params[k]) for k in kept)


def test_moon_pulls_training_and_leaves_no_hook_on_the_model() -> None:
    site = _site()
    first = site.train(_instruction(client_algorithm="moon"))
    second = site.train(_instruction(2, client_algorithm="moon"))
    plain = _site().train(_instruction(2))
    assert isinstance(first, ClientUpdate) and isinstance(second, ClientUpdate)
    assert isinstance(plain, ClientUpdate)
    assert not all(np.array_equal(plain.params[k], second.params[k]) for k in plain.params)
    model = site._model
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_moon_refuses_a_negative_mu_naming_it() -> None:
    reply = _site().train(_instruction(client_algorithm="moon", moon_mu=-1.0))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert "moon_mu" in reply.message


# ---------------------------------------------------------------- FedDyn


class _Holder:
    """A LocalSite that only holds a model (what FedDyn's step uses)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def load(self, params: Params, *, where: str) -> None:
        raise AssertionError("not used")

    def fit(self, *, purpose: str, hooks: FitHooks | None) -> FitResult:
        raise AssertionError("not used")

    def train_loss(self) -> float:
        raise AssertionError("not used")


def _feddyn_step(kept: float, alpha: float) -> ClientStep:
    instruction = TrainInstruction(
        rnd=2, params={}, hparams={"client_algorithm": "feddyn", "feddyn_alpha": alpha}
    )
    state = SiteState(tensors={Extra.FEDDYN_GRAD + "weight": np.array([[kept]])})
    training = LocalTraining.from_hparams({**HPARAMS, **instruction.hparams})
    step = FedDyn().start(RoundContext(instruction=instruction, training=training, state=state))
    assert step is not None
    return step


def test_feddyn_penalty_and_gradient_term_worked_by_hand() -> None:
    # w_global = 2, kept g = 0.5, alpha = 0.1.
    # penalty(w) = -g w + alpha / 2 (w - 2)^2: at 2 -> -1.0; at 3 -> -1.5 + 0.05 = -1.45.
    # after training to w = 3: g <- 0.5 - 0.1 * (3 - 2) = 0.4.
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(2.0)
    site: LocalSite = _Holder(model)
    step = _feddyn_step(kept=0.5, alpha=0.1)
    hooks = step.before_fit(site)
    assert hooks is not None and hooks.penalty is not None
    assert float(hooks.penalty(model).detach()) == pytest.approx(-1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert float(hooks.penalty(model).detach()) == pytest.approx(-1.45)
    empty = LocalUpdate(params={}, extras={}, tensors={}, meta={}, metrics={})
    kept = step.after_fit(site, empty, FitResult(num_steps=1, metrics={}))
    np.testing.assert_allclose(kept.tensors[Extra.FEDDYN_GRAD + "weight"], [[0.4]])


def test_feddyn_site_keeps_its_gradient_term_and_uses_it_next_round(tmp_path: Path) -> None:
    site = _site(tmp_path)
    instruction = _instruction(client_algorithm="feddyn", feddyn_alpha=0.1)
    first = site.train(instruction)
    assert isinstance(first, ClientUpdate)
    # first round: g = 0 - alpha (w_1 - w_global)
    for name, sent in instruction.params.items():
        kept = site.state.tensors[Extra.FEDDYN_GRAD + name]
        np.testing.assert_allclose(kept, -0.1 * (first.params[name] - sent), rtol=1e-5, atol=1e-7)
    assert SiteState.load(tmp_path).tensors.keys() == site.state.tensors.keys()
    again = _instruction(2, params=first.params, client_algorithm="feddyn", feddyn_alpha=0.1)
    remembered = site.train(again)
    fresh = _site().train(again)
    assert isinstance(remembered, ClientUpdate) and isinstance(fresh, ClientUpdate)
    assert not all(np.array_equal(remembered.params[k], fresh.params[k]) for k in fresh.params)


def test_feddyn_refuses_a_non_positive_alpha() -> None:
    reply = _site().train(_instruction(client_algorithm="feddyn", feddyn_alpha=0.0))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert "feddyn_alpha" in reply.message


# ---------------------------------------------------------------- a user's own


class _Counting(PassStep):
    closed: ClassVar[list[str]] = []

    def __init__(self, count: float) -> None:
        self._count = count

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        return update.with_metrics({"rounds_here": self._count}).with_tensors(
            {"counting/n": np.array([self._count])}
        )

    def close(self) -> None:
        _Counting.closed.append("closed")


class _CountingAlgorithm:
    """A user's client algorithm: counts the rounds a site trained with it."""

    name = "counting"

    def start(self, context: RoundContext) -> ClientStep | None:
        if context.training.client_algorithm != self.name:
            return None
        before = context.kept("counting/").get("n", np.zeros(1))
        step = context.instruction.hparams.get("counting.step", 1)  # its own setting
        return _Counting(float(before[0]) + float(step))


@pytest.fixture
def registered() -> Iterator[None]:
    register_client_algorithm(_CountingAlgorithm())
    _Counting.closed.clear()
    yield
    client_registry.CLIENT_ALGORITHMS.unregister("counting")


@pytest.mark.usefixtures("registered")
def test_a_registered_algorithm_runs_at_a_site_with_no_edit_of_it() -> None:
    site = _site()
    first = site.train(_instruction(client_algorithm="counting"))
    second = site.train(_instruction(2, client_algorithm="counting"))
    assert isinstance(first, ClientUpdate) and isinstance(second, ClientUpdate)
    assert first.metrics["rounds_here"] == 1 and second.metrics["rounds_here"] == 2
    assert _Counting.closed == ["closed", "closed"]


@pytest.mark.usefixtures("registered")
def test_steps_are_closed_when_local_training_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    site = _site()

    def fail(**_kwargs: object) -> FitResult:
        raise RuntimeError("boom")

    monkeypatch.setattr(site._task, "fit", fail)
    reply = site.train(_instruction(client_algorithm="counting"))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.TRAINING_FAILED
    assert _Counting.closed == ["closed"]


@pytest.mark.usefixtures("registered")
def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(PluginError, match="'counting' is registered twice"):
        register_client_algorithm(_CountingAlgorithm())


@pytest.mark.usefixtures("registered")
def test_a_client_algorithm_reads_its_own_dotted_hyperparameter() -> None:
    site = _site()
    instruction = _instruction(client_algorithm="counting")
    own = TrainInstruction(
        rnd=1, params=instruction.params, hparams={**instruction.hparams, "counting.step": 5}
    )
    reply = site.train(own)
    assert isinstance(reply, ClientUpdate) and reply.metrics["rounds_here"] == 5


@pytest.mark.usefixtures("registered")
def test_a_dotted_hyperparameter_of_an_algorithm_the_round_does_not_run_is_refused() -> None:
    instruction = _instruction()  # client_algorithm = standard
    stray = TrainInstruction(
        rnd=1, params=instruction.params, hparams={**instruction.hparams, "counting.step": 5}
    )
    reply = _site().train(stray)
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert "'counting.step' belongs to client algorithm 'counting'" in reply.message
    assert "'standard'" in reply.message


@pytest.mark.parametrize(
    ("name", "part", "message"),
    [
        ("standard", _CountingAlgorithm(), "'standard' means no client algorithm"),
        ("counting", object(), "must have a 'name' and a 'start"),
        ("other", _CountingAlgorithm(), "names itself 'counting'"),
    ],
)
def test_what_is_not_a_client_algorithm_under_its_own_name_is_refused(
    name: str, part: object, message: str
) -> None:
    with pytest.raises(PluginError, match=message):
        client_registry.CLIENT_ALGORITHMS.register(name, part)  # type: ignore[arg-type]


def test_an_installed_client_algorithm_is_imported_only_when_an_instruction_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a fake installed package declaring one client algorithm, and a fresh
    # registry holding the built-ins (the session's one has listed its entry points).
    module = "fake_client_algorithm_mod"
    (tmp_path / f"{module}.py").write_text(
        "class Noop:\n"
        "    name = 'noop'\n"
        "    def start(self, context):\n"
        "        return None\n"
        "NOOP = Noop()\n"
    )
    info = tmp_path / "fake_client_plugin-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-client-plugin\nVersion: 2.0\n"
    )
    (info / "entry_points.txt").write_text(f"[flmi.client_algorithms]\nnoop = {module}:NOOP\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = Registry[ClientAlgorithm](
        kind="client algorithm", group="flmi.client_algorithms", field="client_algorithm"
    )
    for name, algorithm in client_registry.CLIENT_ALGORITHMS.loaded():
        fresh.register(name, algorithm, origin=client_registry.CLIENT_ALGORITHMS.origin(name))
    monkeypatch.setattr(client_registry, "CLIENT_ALGORITHMS", fresh)

    # Act / Assert: a standard round leaves the package unimported; a round naming it loads it.
    site = _site()
    assert isinstance(site.train(_instruction()), ClientUpdate)
    assert module not in sys.modules
    assert isinstance(site.train(_instruction(2, client_algorithm="noop")), ClientUpdate)
    assert module in sys.modules
    assert fresh.origin("noop").distribution == "fake-client-plugin"


def test_an_unknown_client_algorithm_is_refused_listing_the_known_ones() -> None:
    reply = _site().train(_instruction(client_algorithm="fedmagic"))
    assert isinstance(reply, ClientError) and reply.code == ErrorCode.HPARAM_REFUSED
    assert "'fedmagic'" in reply.message and "feddyn" in reply.message and "moon" in reply.message
    assert "flmi.client_algorithms" in reply.message  # where a plug-in would come from
