"""FedBN: normalisation layers never leave a site, and each site is scored with its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from flmi.config import load_config
from flmi.core.federation import split_replies
from flmi.core.keys import Extra
from flmi.core.messages import (
    ClientUpdate,
    EvaluateInstruction,
    EvaluateResult,
    TrainInstruction,
    UpdateKind,
)
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.simulation import run_experiment
from flmi.site.site import Site
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import normalisation_names, params_copy
from tests.conftest import tiny_tables, write_config

HPARAMS = {"lr": 0.05, "batch_size": 8, "local_epochs": 1, "keep_local": "norm"}


def _task() -> ClassificationTask:
    return ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )


def _site() -> Site:
    rng = np.random.default_rng(0)
    split = ArraySplit(x=rng.random((16, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 16))
    return Site(
        name="h",
        data=SiteSplits(train=split, val=split, test=split),
        task=_task(),
        seed=0,
        device=torch.device("cpu"),
    )


def test_normalisation_layers_are_kept_at_the_site_and_never_sent() -> None:
    model = _task().build_model(seed=1)
    norm = normalisation_names(model)
    assert norm and all(".weight" in n or ".bias" in n for n in norm)
    site = _site()
    reply = site.train(TrainInstruction(rnd=1, params=params_copy(model), hparams=HPARAMS))
    assert isinstance(reply, ClientUpdate)
    assert not set(reply.params) & norm
    kept = {k[len(Extra.LOCAL) :] for k in site.state.tensors if k.startswith(Extra.LOCAL)}
    assert kept == norm


def test_site_trains_and_evaluates_with_its_own_normalisation_layers() -> None:
    model = _task().build_model(seed=1)
    site = _site()
    site.train(TrainInstruction(rnd=1, params=params_copy(model), hparams=HPARAMS))
    own = {
        k[len(Extra.LOCAL) :]: v for k, v in site.state.tensors.items() if k.startswith(Extra.LOCAL)
    }
    shared = params_copy(model)
    personal = site.evaluate(EvaluateInstruction(rnd=1, params=shared, split="test", personal=True))
    plain = site.evaluate(EvaluateInstruction(rnd=1, params=shared, split="test", personal=False))
    assert isinstance(personal, EvaluateResult) and isinstance(plain, EvaluateResult)
    assert personal.metrics["loss"] != plain.metrics["loss"]  # the site's own layers were used
    assert any(not np.array_equal(own[k], shared[k]) for k in own)


def test_partial_update_is_rejected_unless_the_strategy_keeps_layers_local() -> None:
    reference = {"conv.weight": np.zeros(2, np.float32), "norm.weight": np.ones(2, np.float32)}
    update = ClientUpdate(
        site="a",
        params={"conv.weight": np.ones(2, np.float32)},
        kind=UpdateKind.FULL,
        num_examples=1,
        num_steps=1,
        metrics={},
    )
    accepted, _ = split_replies({"a": update}, reference, allow_partial=True)
    assert accepted == [update]
    rejected, errors = split_replies({"a": update}, reference)
    assert rejected == [] and "'norm.weight' is missing" in errors["a"].message


def test_fedbn_run_scores_each_site_and_leaves_no_central_model_score(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables(strategy={"name": "fedbn"})))
    run_experiment(config=config, out=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["global"] is None and len(line["per_site"]) == 4 for line in lines)
    assert all(line["sites_failed"] == {} for line in lines)
    assert lines[0]["bytes_up"] < lines[0]["bytes_down"]  # normalisation layers stayed home


def test_ditto_site_keeps_a_personal_model_and_scores_with_it() -> None:
    model = _task().build_model(seed=1)
    site = _site()
    hparams = {
        "lr": 0.05,
        "batch_size": 8,
        "local_epochs": 1,
        "personal": "ditto",
        "ditto_lambda": 0.1,
    }
    update = site.train(TrainInstruction(rnd=1, params=params_copy(model), hparams=hparams))
    assert isinstance(update, ClientUpdate)
    personal = {
        k[len(Extra.PERSONAL) :]: v
        for k, v in site.state.tensors.items()
        if k.startswith(Extra.PERSONAL)
    }
    assert set(personal) == set(update.params)
    assert any(not np.array_equal(personal[k], update.params[k]) for k in personal)
    scored = site.evaluate(
        EvaluateInstruction(rnd=1, params=update.params, split="test", personal=True)
    )
    plain = site.evaluate(EvaluateInstruction(rnd=1, params=update.params, split="test"))
    assert isinstance(scored, EvaluateResult) and isinstance(plain, EvaluateResult)
    assert scored.metrics["loss"] != plain.metrics["loss"]


def test_large_ditto_lambda_pulls_the_personal_model_onto_the_global_one() -> None:
    model = _task().build_model(seed=1)
    start = params_copy(model)

    def personal_distance(lam: float) -> float:
        site = _site()
        hparams = {
            "lr": 0.05,
            "batch_size": 8,
            "local_epochs": 2,
            "personal": "ditto",
            "ditto_lambda": lam,
        }
        site.train(TrainInstruction(rnd=1, params=start, hparams=hparams))
        own = {
            k[len(Extra.PERSONAL) :]: v
            for k, v in site.state.tensors.items()
            if k.startswith(Extra.PERSONAL)
        }
        return sum(float(((own[k] - start[k]) ** 2).sum()) for k in own)

    assert personal_distance(5.0) < personal_distance(0.0)  # lr * lambda < 2 keeps it stable


def test_ditto_run_reports_personalised_scores_per_site(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables(strategy={"name": "ditto"})))
    run_experiment(config=config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["arms"]["federated"]["per_site"]) == 4


def test_ifca_run_records_cluster_membership_every_round(tmp_path: Path) -> None:
    tables = tiny_tables(strategy={"name": "ifca", "num_clusters": 2})
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
    )
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        membership = line["strategy"]["membership"]
        assert sorted(membership) == ["hospital_1", "hospital_2", "hospital_3", "hospital_4"]
        assert set(membership.values()) <= {0, 1}
        assert line["sites_failed"] == {}


def test_cusfl_site_keeps_its_classifier_head_and_sends_the_extractor() -> None:
    model = _task().build_model(seed=1)
    site = _site()
    hparams = {"lr": 0.05, "batch_size": 8, "local_epochs": 1, "keep_local": "head"}
    update = site.train(TrainInstruction(rnd=1, params=params_copy(model), hparams=hparams))
    assert isinstance(update, ClientUpdate)
    assert not {"head.weight", "head.bias"} & set(update.params)
    assert "features.0.weight" in update.params
    kept = {k[len(Extra.LOCAL) :] for k in site.state.tensors if k.startswith(Extra.LOCAL)}
    assert kept == {"head.weight", "head.bias"}


def test_cusfl_run_scores_every_site_with_its_own_head(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables(strategy={"name": "cusfl"})))
    run_experiment(config=config, out=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["sites_failed"] == {} and len(line["per_site"]) == 4 for line in lines)


def test_finetune_evaluation_adapts_a_copy_to_the_site_before_scoring() -> None:
    model = _task().build_model(seed=1)
    site = _site()
    params = params_copy(model)
    settings = {"lr": 0.05, "batch_size": 8, "finetune_epochs": 3}
    tuned = site.evaluate(
        EvaluateInstruction(rnd=1, params=params, split="train", hparams=settings)
    )
    again = site.evaluate(
        EvaluateInstruction(rnd=1, params=params, split="train", hparams=settings)
    )
    plain = site.evaluate(EvaluateInstruction(rnd=1, params=params, split="train"))
    assert isinstance(tuned, EvaluateResult) and isinstance(plain, EvaluateResult)
    assert isinstance(again, EvaluateResult)
    np.testing.assert_equal(dict(again.metrics), dict(tuned.metrics))  # seeded (NaN: withheld)
    assert tuned.metrics["loss"] < plain.metrics["loss"]  # fitted to the site's own data
    np.testing.assert_array_equal(params["head.bias"], params_copy(model)["head.bias"])


def test_finetune_run_scores_every_site_after_fine_tuning(tmp_path: Path) -> None:
    tables = tiny_tables(strategy={"name": "finetune", "finetune_epochs": 2})
    run_experiment(
        config=load_config(write_config(tmp_path / "c.toml", tables)), out=tmp_path / "run"
    )
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["sites_failed"] == {} and len(line["per_site"]) == 4 for line in lines)
