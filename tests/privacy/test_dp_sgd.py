"""Sample-level DP-SGD at a site: Opacus does the work, flmi's names and ledger stay clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from flmi.core.errors import ConfigError
from flmi.core.keys import HParam, PrivacyKey
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, TrainInstruction
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.privacy.accounting import Ledger
from flmi.privacy.dp_sgd import DPSGD, SampleDPSettings, check_dp_model
from flmi.privacy.strategies import SampleDP
from flmi.site.site import Site
from flmi.site.state import SiteState
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.base import FitHooks, LocalTraining
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy

N = 40
HPARAMS: dict[str, float | int | str] = {
    "lr": 0.05,
    "batch_size": 8,
    "local_epochs": 1,
    "optimizer": "sgd",
    "momentum": 0.0,
}
DP: dict[str, float | int | str] = {
    HParam.DP: "sample",
    HParam.DP_NOISE_MULTIPLIER: 1.3,
    HParam.DP_MAX_GRAD_NORM: 0.7,
    HParam.DP_DELTA: 1e-5,
    HParam.DP_ACCOUNTANT: "rdp",
}


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _site(state_dir: Path | None = None) -> Site:
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=rng.random((N, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, N).astype(np.int64)
    )
    return Site(
        name="h1",
        data=SiteSplits(train=data, val=data, test=data),
        task=_task(),
        seed=0,
        device=torch.device("cpu"),
        state_dir=state_dir,
    )


def _instruction(rnd: int, **extra: float | int | str) -> TrainInstruction:
    return TrainInstruction(
        rnd=rnd,
        params=params_copy(_task().build_model(seed=1)),
        hparams={**HPARAMS, **DP, **extra},
    )


def test_dp_sgd_update_carries_the_plain_model_names_never_opacus_prefixed_ones() -> None:
    site = _site()
    instruction = _instruction(1)
    update = site.train(instruction)
    assert isinstance(update, ClientUpdate)
    assert set(update.params) == set(instruction.params)
    assert not any("_module" in name for name in update.params)
    for name, value in instruction.params.items():
        assert update.params[name].shape == value.shape
        assert update.params[name].dtype == value.dtype
    assert not np.array_equal(update.params["head.weight"], instruction.params["head.weight"])


def test_dp_sgd_leaves_no_opacus_hooks_or_per_example_gradients_on_the_model() -> None:
    task = _task()
    model = task.build_model(seed=0)
    rng = np.random.default_rng(0)
    data = ArraySplit(
        x=rng.random((N, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, N).astype(np.int64)
    )
    dp = DPSGD(settings=SampleDPSettings.from_hparams(DP) or _never(), ledger=Ledger())
    task.fit(
        model=model,
        data=data,
        training=LocalTraining.from_hparams(HPARAMS),
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        hooks=FitHooks(private=dp),
    )
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert all(getattr(m, "inplace", True) for m in model.modules() if hasattr(m, "inplace"))


def _never() -> SampleDPSettings:
    raise AssertionError("the DP hyperparameters did not parse")


def test_accountant_inputs_are_what_training_used_counted_in_the_training_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Instrument the training loop itself: every noise addition Opacus's optimiser makes,
    # and every batch its Poisson sampler draws.
    noised: list[tuple[float, float]] = []
    batches: list[int] = []
    rates: list[float] = []
    add_noise = DPOptimizer.add_noise
    sampler_iter = UniformWithReplacementSampler.__iter__

    def counting_add_noise(self: Any) -> None:
        noised.append((float(self.noise_multiplier), float(self.max_grad_norm)))
        add_noise(self)

    def counting_iter(self: Any) -> Any:
        rates.append(float(self.sample_rate))
        for indices in sampler_iter(self):
            batches.append(len(indices))
            yield indices

    monkeypatch.setattr(DPOptimizer, "add_noise", counting_add_noise)
    monkeypatch.setattr(UniformWithReplacementSampler, "__iter__", counting_iter)
    site = _site(tmp_path)
    server = SampleDP(
        inner=FedAvg(hparams=HPARAMS),
        noise_multiplier=1.3,
        max_grad_norm=0.7,
        delta=1e-5,
        accountant="rdp",
        target_epsilon=None,
        rounds=3,
    )
    state = server.init(params_copy(_task().build_model(seed=1)))
    for rnd in (1, 2, 3):
        instruction = server.configure(rnd, state, ["h1"])["h1"]
        update = site.train(instruction)
        assert isinstance(update, ClientUpdate)
        state, _ = server.aggregate(rnd, state, [update])

    ledger = Ledger.from_json(SiteState.load(tmp_path).meta[PrivacyKey.LEDGER])
    ((z, q, steps),) = ledger.history
    assert steps == len(noised) == len(batches) == 3 * 5  # 40 examples, batch 8: 5 steps a round
    assert {n for n, _ in noised} == {z} == {1.3}
    assert {c for _, c in noised} == {0.7}
    assert set(rates) == {q} == {8 / N}
    # The sampler really drew Poisson batches at that rate (mean 8 of 40, sd ~2.5 per batch).
    assert abs(np.mean(batches) / N - q) < 0.06
    assert len(set(batches)) > 1
    # The server's ledger, fed from the sites' reports, is the site's own.
    assert state.ledgers["h1"] == ledger
    assert server.privacy_record(state)["epsilon"] == pytest.approx(
        ledger.epsilon(delta=1e-5, accountant="rdp"), abs=1e-6
    )


def test_dp_sgd_noise_std_on_the_gradient_is_sigma_times_clip_over_the_batch() -> None:
    # Zero inputs: every per-example weight gradient is zero, so a weight moves by noise alone:
    # lr * N(0, (sigma * C)^2) / expected_batch.
    task = ClassificationTask(
        num_classes=2, in_channels=4000, spatial_dims=0, positive_label=1, model="logistic"
    )
    model = task.build_model(seed=0)
    with torch.no_grad():
        model.weight.zero_()
    data = ArraySplit(x=np.zeros((N, 4000), np.float32), y=np.ones(N, np.int64))
    settings = SampleDPSettings(
        noise_multiplier=2.0, max_grad_norm=0.5, delta=1e-5, accountant="rdp"
    )
    training = LocalTraining.from_hparams({**HPARAMS, "local_steps": 1, "lr": 1.0})
    task.fit(
        model=model,
        data=data,
        training=training,
        generator=torch.Generator().manual_seed(3),
        device=torch.device("cpu"),
        hooks=FitHooks(private=DPSGD(settings=settings, ledger=Ledger())),
    )
    moved = model.weight.detach().numpy().ravel()
    expected = 2.0 * 0.5 / 8  # sigma * C / expected batch size, lr 1
    assert np.std(moved) == pytest.approx(expected, rel=0.05)
    assert abs(np.mean(moved)) < 4 * expected / np.sqrt(moved.size)


def test_resumed_site_continues_its_accounting_from_its_saved_state(tmp_path: Path) -> None:
    straight = _site(tmp_path / "a")
    for rnd in (1, 2):
        straight.train(_instruction(rnd))
    first = _site(tmp_path / "b")
    first.train(_instruction(1))
    resumed = _site(tmp_path / "b")  # a new process: state read back from disk
    resumed.train(_instruction(2))
    a = SiteState.load(tmp_path / "a").meta[PrivacyKey.LEDGER]
    b = SiteState.load(tmp_path / "b").meta[PrivacyKey.LEDGER]
    assert a == b
    assert Ledger.from_json(b).steps == 10


def test_target_epsilon_picks_the_noise_that_spends_it_after_the_planned_rounds() -> None:
    site = _site()
    update = site.train(_instruction(1, **{HParam.DP_TARGET_EPSILON: 4.0, HParam.DP_ROUNDS: 2}))
    assert isinstance(update, ClientUpdate)
    z, q = update.metrics[PrivacyKey.NOISE_MULTIPLIER], update.metrics[PrivacyKey.SAMPLE_RATE]
    spent_after_plan = Ledger().add(noise_multiplier=z, sample_rate=q, steps=10)
    assert spent_after_plan.epsilon(delta=1e-5, accountant="rdp") == pytest.approx(4.0, abs=0.05)


def test_a_site_refuses_dp_sgd_with_a_proximal_term_and_says_why() -> None:
    reply = _site().train(_instruction(1, prox_mu=0.1))
    assert isinstance(reply, ClientError)
    assert reply.code == ErrorCode.HPARAM_REFUSED
    assert "proximal" in reply.message


def test_a_batchnorm_model_is_a_config_error_naming_batchnorm() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ConfigError, match="BatchNorm") as info:
        check_dp_model(model)
    assert "GroupNorm" in str(info.value)
    check_dp_model(_task().build_model(seed=0))  # flmi's own model passes


def test_empty_poisson_batches_still_take_a_noisy_step_and_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []
    sampler_iter = UniformWithReplacementSampler.__iter__

    def counting_iter(self: Any) -> Any:
        for indices in sampler_iter(self):
            sizes.append(len(indices))
            yield indices

    monkeypatch.setattr(UniformWithReplacementSampler, "__iter__", counting_iter)
    # Batch 1 of 40: each step is empty with probability (39/40)^40, about 0.36.
    update = _site().train(_instruction(1, batch_size=1, local_steps=30))
    assert isinstance(update, ClientUpdate)
    assert 0 in sizes and len(sizes) == 30
    assert update.num_steps == 30 and update.metrics[PrivacyKey.STEPS] == 30
    assert all(np.isfinite(v).all() for v in update.params.values())
