"""The privacy audit: what the server reads off an update, and the numbers it reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flmi.cli import main
from flmi.config import Config, config_from_dict, training_hparams
from flmi.core.errors import ConfigError
from flmi.core.messages import ClientUpdate, TrainInstruction, UpdateKind
from flmi.core.params import Params
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.data.sources import load_data
from flmi.privacy.audit import (
    MEMBERSHIP_SANITY_AUC,
    AttackSettings,
    AuditReport,
    attacked_round,
    audit_task,
    calibrated_auc,
    example_losses,
    image_scores,
    membership_auc,
    observed_gradient,
    recover_labels,
    reference_membership,
    run_audit,
    server_view,
    shadow_losses,
    train_centrally,
)
from flmi.report.rundir import RunDir
from flmi.simulation import run_experiment
from flmi.site.site import Site
from flmi.strategies.registry import build_strategy
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy
from tests.conftest import tiny_tables


def test_labels_come_from_the_sign_of_the_last_bias_gradient() -> None:
    assert recover_labels(np.array([0.3, -0.3]), 1) == [1]
    assert recover_labels(np.array([-0.2, 0.1, 0.1]), 1) == [0]
    assert recover_labels(np.array([-0.4]), 2) == [1, 1]  # one logit: negative means label 1
    assert sorted(recover_labels(np.array([-0.1, -0.3, 0.4]), 2)) == [0, 1]


def test_the_observed_gradient_is_the_same_from_full_weights_or_a_delta() -> None:
    sent = {"w": np.array([1.0, 2.0], np.float32)}
    moved = {"w": np.array([0.8, 2.4], np.float32)}

    def update(params: dict[str, np.ndarray], kind: UpdateKind) -> ClientUpdate:
        return ClientUpdate(
            site="a", params=params, kind=kind, num_examples=1, num_steps=2, metrics={}
        )

    full = observed_gradient(sent=sent, update=update(moved, UpdateKind.FULL), lr=0.1, names=["w"])
    delta = {"w": moved["w"] - sent["w"]}
    dlt = observed_gradient(sent=sent, update=update(delta, UpdateKind.DELTA), lr=0.1, names=["w"])
    np.testing.assert_allclose(full["w"], [1.0, -2.0], rtol=1e-5)
    np.testing.assert_allclose(dlt["w"], full["w"])


def test_psnr_of_a_uniform_error_of_a_tenth_is_twenty_decibels() -> None:
    image = np.full((1, 16, 16), 0.5, np.float32)
    psnr, ssim = image_scores(image + 0.1, image)
    assert psnr == pytest.approx(20.0, abs=1e-3)
    assert image_scores(image, image)[1] == pytest.approx(1.0)
    assert ssim < 1.0


def test_membership_auc_is_one_when_members_have_lower_loss_than_everyone_else() -> None:
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=0, positive_label=1, model="logistic"
    )
    model = task.build_model(seed=0)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.bias.zero_()
    x = np.array([[1.0], [2.0], [-1.0], [-2.0]], np.float32)
    members = ArraySplit(x=x[:2], y=np.array([1, 1]))  # confidently right: low loss
    others = ArraySplit(x=x[2:], y=np.array([1, 1]))  # confidently wrong: high loss
    auc = membership_auc(
        task=task, model=model, members=members, others=others, device=torch.device("cpu")
    )
    assert auc == 1.0


def test_audit_of_an_undefended_batch_of_one_recovers_every_label_and_writes_its_report(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        federation={"batch_size": 1, "local_steps": 1, "momentum": 0.0, "rounds": 1},
        report={"bootstrap_resamples": 0},
    )
    config = config_from_dict(tables)
    run_experiment(config=config, out=tmp_path / "run")
    report = run_audit(
        config=config,
        run_dir=tmp_path / "run",
        out=tmp_path / "run" / "audit",
        settings=AttackSettings(batches=3, iterations=20, reference_epochs=2, shadow_epochs=2),
    )
    assert report.label_recovery_rate == 1.0
    assert report.local_steps == 1 and report.batch_size == 1 and report.attacked_round == 1
    assert len(report.psnr) == len(report.unrelated_psnr) == 3
    assert report.membership_auc is not None and 0.0 <= report.membership_auc <= 1.0
    assert report.shadow_models == 2 and report.calibrated_membership_auc is not None
    assert report.update_membership_auc is not None and len(report.update_membership_auc) == 4
    assert report.replay_error is not None and report.replay_error < 1e-5
    written = json.loads((tmp_path / "run" / "audit" / "audit.json").read_text())
    assert written["psnr_mean"] == pytest.approx(np.mean(report.psnr))
    assert len(report.mean_image_psnr) == 3
    assert written["floor_psnr"] == max(
        written["unrelated_psnr_mean"], written["mean_image_psnr_mean"]
    )
    assert (tmp_path / "run" / "audit" / "reconstructions.png").stat().st_size > 1000


def test_flmi_audit_on_a_run_directory_attacks_under_dp_and_reports(tmp_path: Path) -> None:
    tables = tiny_tables(
        federation={"batch_size": 2, "local_steps": 1, "momentum": 0.0, "rounds": 1},
        privacy={"dp": "sample", "noise_multiplier": 1.0},
        report={"bootstrap_resamples": 0},
    )
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    code = main(
        [
            "audit",
            str(tmp_path / "run"),
            "--batches",
            "1",
            "--iterations",
            "5",
            "--reference-epochs",
            "2",
            "--shadow-models",
            "0",
        ]
    )
    assert code == 0
    written = json.loads((tmp_path / "run" / "audit" / "audit.json").read_text())
    assert written["privacy"]["dp"] == "sample"
    assert written["batch_size"] == 2
    assert len(written["update_membership_auc"]) == 4
    assert written["replay_error"] > 1e-3  # fresh DP noise: not the update the server held


def test_flmi_audit_of_an_unknown_site_is_an_error_naming_the_sites(tmp_path: Path) -> None:
    tables = tiny_tables(federation={"rounds": 1}, report={"bootstrap_resamples": 0})
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    code = main(["audit", str(tmp_path / "run"), "--site", "nowhere", "--iterations", "1"])
    assert code == 2
    assert not (tmp_path / "run" / "audit").exists()


def _secure_view_setup(
    aggregation: str,
) -> tuple[Config, FederatedData, ClassificationTask, Params, dict[str, TrainInstruction]]:
    tables = tiny_tables(
        federation={"batch_size": 2, "local_steps": 1, "momentum": 0.0, "rounds": 1},
        privacy={"aggregation": aggregation},
    )
    config = config_from_dict(tables)
    data = load_data(config)
    task = audit_task(config, data)
    sent = params_copy(task.build_model(seed=0))
    strategy = build_strategy(name="fedavg", hparams=training_hparams(config), options={})
    instructions = dict(strategy.configure(1, strategy.init(sent), sorted(data.sites)))
    return config, data, task, sent, instructions


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
def test_under_secure_aggregation_the_attacker_holds_the_sites_mean_update_not_any_one(
    aggregation: str,
) -> None:
    config, data, task, sent, instructions = _secure_view_setup(aggregation)
    batches = {s: data.sites[s].train.take(np.array([0, 1])) for s in sorted(data.sites)}
    device = torch.device("cpu")

    view = server_view(
        config=config,
        task=task,
        batches=batches,
        victim="hospital_1",
        instructions=instructions,
        sent=sent,
        seed=3,
        device=device,
    )

    own: dict[str, dict[str, np.ndarray]] = {}
    for name, batch in batches.items():
        site = Site(
            name=name,
            data=SiteSplits(train=batch, val=batch, test=batch),
            task=task,
            seed=3,
            device=device,
        )
        update = site.train(instructions[name])
        assert isinstance(update, ClientUpdate)
        own[name] = {k: update.params[k] - sent[k] for k in sent}
    mean = {k: np.mean([own[s][k] for s in own], axis=0) for k in sent}
    assert view.sites == 4 and view.update.kind is UpdateKind.DELTA
    for k in sent:  # the sum within fixed-point (or CKKS) rounding
        np.testing.assert_allclose(view.update.params[k], mean[k], rtol=0, atol=1e-6)
    for name in own:  # and no single site's change
        gap = max(float(np.max(np.abs(view.update.params[k] - own[name][k]))) for k in sent)
        assert gap > 1e-4


def test_flmi_audit_under_secure_aggregation_reconstructs_every_image_of_the_sum(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        federation={"batch_size": 1, "local_steps": 1, "momentum": 0.0, "rounds": 1},
        privacy={"aggregation": "secagg"},
        report={"bootstrap_resamples": 0},
    )
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    code = main(
        [
            "audit",
            str(tmp_path / "run"),
            "--batches",
            "2",
            "--iterations",
            "5",
            "--reference-epochs",
            "2",
            "--shadow-models",
            "0",
        ]
    )
    assert code == 0
    written = json.loads((tmp_path / "run" / "audit" / "audit.json").read_text())
    assert written["aggregation"] == "secagg" and written["sites_in_update"] == 4
    assert written["images_reconstructed"] == 8  # 4 sites x batch 1, twice
    assert len(written["psnr"]) == len(written["unrelated_psnr"]) == 2  # the victim's images


def test_the_audit_attacks_the_last_round_from_the_model_the_server_sent_in_it(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        federation={"batch_size": 2, "local_steps": 1, "momentum": 0.0, "rounds": 3},
        report={"bootstrap_resamples": 0},
    )
    run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    initial = {"w": np.zeros(1, np.float32)}

    target = attacked_round(run_dir=tmp_path / "run", initial=initial)

    round_2 = RunDir(path=tmp_path / "run").checkpoint(arm="federated", rnd=2)
    assert round_2 is not None
    assert target.rnd == 3 and target.state is not None
    assert sorted(target.sent) == sorted(round_2[1])
    for k, v in round_2[1].items():
        np.testing.assert_array_equal(target.sent[k], v)


def test_an_audit_of_a_run_without_checkpoints_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint of the federated arm"):
        attacked_round(run_dir=tmp_path, initial={})


def test_the_membership_sanity_check_separates_an_overfit_models_members() -> None:
    tables = tiny_tables(federation={"batch_size": 8, "lr": 0.01, "optimizer": "adam"})
    config = config_from_dict(tables)
    data = load_data(config)
    task = audit_task(config, data)

    auc, members = reference_membership(
        config=config,
        task=task,
        data=data,
        settings=AttackSettings(reference_members=24, reference_epochs=30),
        device=torch.device("cpu"),
    )

    assert members == 24
    assert auc >= MEMBERSHIP_SANITY_AUC


def test_a_membership_figure_is_meaningful_only_when_the_overfit_check_passes() -> None:
    def report(reference: float | None) -> AuditReport:
        return AuditReport(
            site="a",
            batch_size=1,
            local_steps=1,
            privacy={},
            psnr=[1.0],
            ssim=[0.0],
            unrelated_psnr=[1.0],
            unrelated_ssim=[0.0],
            label_recovery_rate=1.0,
            membership_auc=0.5,
            reference_membership_auc=reference,
        )

    assert report(0.9).membership_meaningful
    assert not report(0.55).membership_meaningful
    assert not report(None).membership_meaningful
    assert report(0.55).to_json()["membership_meaningful"] is False


def _noise_task_and_data(n: int, *, seed: int) -> tuple[ClassificationTask, ArraySplit, ArraySplit]:
    """Random 8x8 images with random labels: a model can only learn them by heart."""
    rng = np.random.default_rng(seed)
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, model="small_cnn", width=8
    )

    def split() -> ArraySplit:
        return ArraySplit(
            x=rng.random((n, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 2, size=n)
        )

    return task, split(), split()


def test_the_loss_attack_separates_a_model_fit_to_its_members_and_not_an_untrained_one() -> None:
    config = config_from_dict(
        tiny_tables(federation={"batch_size": 16, "lr": 0.01, "optimizer": "adam"})
    )
    task, members, others = _noise_task_and_data(48, seed=1)
    cpu = torch.device("cpu")
    untrained = task.build_model(seed=0)
    fit = train_centrally(config=config, task=task, train=members, epochs=40, seed=0, device=cpu)

    before = membership_auc(task=task, model=untrained, members=members, others=others, device=cpu)
    after = membership_auc(task=task, model=fit, members=members, others=others, device=cpu)

    # Under no memorisation the AUC of 48 against 48 has a standard deviation of about 0.06.
    assert abs(before - 0.5) < 0.2
    assert after >= MEMBERSHIP_SANITY_AUC


def test_calibration_tells_hard_members_from_easy_non_members() -> None:
    # Members are hard examples the model learnt a little (2.0 -> 1.5); the others are easy
    # examples it never saw (0.2 under either model). A loss threshold calls the easy ones
    # members (AUC 0); their drop against the shadow model says who was trained on (AUC 1).
    target = np.array([1.5, 1.5, 0.2, 0.2])
    shadow = np.array([2.0, 2.0, 0.2, 0.2])
    is_member = np.array([1, 1, 0, 0])

    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(is_member, -target) == 0.0
    assert calibrated_auc(target_losses=target, shadow_losses=shadow, is_member=is_member) == 1.0


def test_each_candidate_is_scored_by_a_shadow_model_that_never_saw_it() -> None:
    config = config_from_dict(
        tiny_tables(federation={"batch_size": 16, "lr": 0.01, "optimizer": "adam"})
    )
    task, candidates, _ = _noise_task_and_data(48, seed=2)
    cpu = torch.device("cpu")
    settings = AttackSettings(shadow_models=2, shadow_epochs=40)
    seen = train_centrally(
        config=config, task=task, train=candidates, epochs=40, seed=1, device=cpu
    )

    held_out = shadow_losses(
        config=config, task=task, candidates=candidates, settings=settings, device=cpu
    )
    trained_on = example_losses(task=task, model=seen, data=candidates, device=cpu)

    # Random labels: a model that saw an example fits it, one that did not is at chance
    # (ln 2 = 0.69 or worse).
    assert held_out.shape == (48,)
    assert held_out.mean() > 0.6 > trained_on.mean() + 0.3


def test_one_shadow_model_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="--shadow-models must be 0"):
        AttackSettings(shadow_models=1)
