"""The server's membership attack on a site's update, and the re-derived updates it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmi.config import config_from_dict
from flmi.core.keys import Arm
from flmi.data.sources import load_data
from flmi.privacy.audit import AttackSettings, attacked_round, audit_task, update_membership
from flmi.privacy.update_membership import alignment, label_matched_auc
from flmi.report.rundir import RunDir
from flmi.simulation import run_experiment
from flmi.tasks.torch_params import params_copy
from tests.conftest import tiny_tables


def test_a_gradient_against_the_update_scores_one_and_along_it_minus_one() -> None:
    delta = np.array([1.0, 0.0])
    scores = alignment(np.array([[-2.0, 0.0], [3.0, 0.0], [0.0, 1.0]]), delta)
    np.testing.assert_allclose(scores, [1.0, -1.0, 0.0])


def test_a_score_that_only_tells_labels_apart_gets_auc_one_half() -> None:
    # Members are all label 1; the non-members of label 0 weigh nothing, so the
    # score (the label itself) ties every member with the label-1 non-member.
    labels = np.array([1, 1, 1, 0, 0, 0])
    is_member = np.array([1, 1, 0, 0, 0, 0])
    auc = label_matched_auc(scores=labels.astype(float), is_member=is_member, labels=labels)
    assert auc == 0.5


def test_a_score_that_ranks_every_member_first_gets_auc_one() -> None:
    labels = np.array([0, 1, 0, 1])
    is_member = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    assert label_matched_auc(scores=scores, is_member=is_member, labels=labels) == 1.0


def _audit_membership(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Any, float]:
    tables = tiny_tables(
        data={"source": "synthetic", "image_size": 16, "n_patients": 240},
        federation={"rounds": 2, "optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "batch_size": 16},
        task={"name": "classification", "num_classes": 2, "positive_label": 1, "width": 16},
        report={"bootstrap_resamples": 0},
        **sections,
    )
    config = config_from_dict(tables)
    run_experiment(config=config, out=tmp_path / "run")
    data = load_data(config)
    model = audit_task(config, data).build_model(seed=config.federation.seed)
    target = attacked_round(run_dir=tmp_path / "run", initial=params_copy(model))
    latest = RunDir(path=tmp_path / "run").latest_checkpoint(arm=Arm.FEDERATED)
    assert latest is not None
    found = update_membership(
        config=config,
        data=data,
        target=target,
        recorded=latest[1],
        settings=AttackSettings(),
        device=torch.device("cpu"),
    )
    assert found.replay_error is not None
    return found, found.replay_error


def test_without_dp_the_re_derived_updates_are_the_ones_the_server_aggregated(
    tmp_path: Path,
) -> None:
    found, error = _audit_membership(tmp_path)
    assert error < 1e-5
    assert found.rnd == 2 and sorted(found.auc) == sorted(found.members)
    assert all(0.0 <= a <= 1.0 for a in found.auc.values())


def test_under_dp_the_re_derived_updates_carry_fresh_noise_not_the_run_s(tmp_path: Path) -> None:
    _, error = _audit_membership(
        tmp_path, privacy={"dp": "sample", "noise_multiplier": 1.0, "max_grad_norm": 1.0}
    )
    assert error > 1e-3
