"""Semi-supervised sites through `flmi run`: config, arms, summary, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.config import config_from_dict, load_config, training_hparams
from flmi.core.errors import ConfigError
from flmi.core.keys import HParam
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

UNLABELED = {"hospital_3": {"labeled": False}, "hospital_4": {"labeled": False}}


def _tables(method: str = "fixmatch", strategy: str = "fedavg", **federation: Any) -> dict:
    return tiny_tables(
        sites=UNLABELED,
        strategy={"name": strategy},
        federation={
            "semi_supervised": method,
            "pseudo_label_threshold": 0.5,  # binary: every prediction is confident enough
            "unlabeled_loss_weight": 1.0,
            **federation,
        },
    )


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_unlabeled_sites_take_part_and_are_counted_without_labels(
    tmp_path: Path, strategy: str
) -> None:
    config = load_config(write_config(tmp_path / "c.toml", _tables(strategy=strategy)))
    result = run_experiment(config=config, out=tmp_path / "run")
    sites = result.summary["sites"]
    for name in ("hospital_3", "hospital_4"):
        assert sites[name]["n_train"] == 0 and sites[name]["label_counts"] == {}
        assert sites[name]["n_unlabeled"] > 0
    assert "n_unlabeled" not in sites["hospital_1"]
    rounds = [x for x in _lines(tmp_path / "run") if x["arm"] == "federated"]
    assert all(x["sites_failed"] == {} for x in rounds)
    assert sorted(rounds[-1]["per_site"]) == [
        "hospital_1",
        "hospital_2",
        "hospital_3",
        "hospital_4",
    ]
    assert np.isfinite(result.arms["federated"].global_metrics["auc"])


def test_without_semi_supervision_unlabeled_sites_sit_out(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", _tables(method="none")))
    result = run_experiment(config=config, out=tmp_path / "run")
    assert result.summary["sites_left_out"] == {
        "hospital_3": "no_labeled_training_data",
        "hospital_4": "no_labeled_training_data",
    }
    rounds = [x for x in _lines(tmp_path / "run") if x["arm"] == "federated"]
    assert all(x["sites_sampled"] == ["hospital_1", "hospital_2"] for x in rounds)


def test_the_labeled_only_federation_trains_as_a_two_site_federation_would() -> None:
    # Same labeled sites, same budget: the arm the semi-supervised one is compared with.
    config = config_from_dict(_tables(method="none"))
    ssl = config_from_dict(_tables())
    a = run_experiment(config=config, out=None).params
    b = run_experiment(config=ssl, out=None).params
    assert not all(np.array_equal(a[k], b[k]) for k in a)  # the unlabeled sites changed the model


def test_too_few_labeled_sites_for_min_sites_is_refused_naming_the_keys(tmp_path: Path) -> None:
    tables = _tables(method="none", min_sites=3)
    with pytest.raises(ConfigError, match="federation.min_sites.*semi_supervised|semi_supervised"):
        run_experiment(config=config_from_dict(tables), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_labeled_false_with_a_labeled_fraction_is_refused() -> None:
    tables = tiny_tables(sites={"hospital_1": {"labeled": False, "labeled_fraction": 0.5}})
    with pytest.raises(ConfigError, match="sites.hospital_1"):
        config_from_dict(tables)
    tables = tiny_tables(sites={"hospital_1": {"labeled_fraction": 1.5}})
    with pytest.raises(ConfigError, match="sites.hospital_1.labeled_fraction"):
        config_from_dict(tables)
    with pytest.raises(ConfigError, match="federation.pseudo_label_threshold"):
        config_from_dict(tiny_tables(federation={"pseudo_label_threshold": 2.0}))
    with pytest.raises(ConfigError, match="federation.semi_supervised"):
        config_from_dict(tiny_tables(federation={"semi_supervised": "mixmatch"}))


def test_a_labeled_fraction_keeps_that_share_of_a_sites_labels(tmp_path: Path) -> None:
    tables = tiny_tables(
        sites={"hospital_1": {"labeled_fraction": 0.5}},
        federation={"semi_supervised": "pseudo_label"},
        baselines={"pooled": True, "local": True},
    )
    full = run_experiment(config=config_from_dict(tiny_tables()), out=None).summary["sites"]
    result = run_experiment(config=config_from_dict(tables), out=None)
    site = result.summary["sites"]["hospital_1"]
    total = full["hospital_1"]["n_train"]
    assert site["n_train"] == round(total * 0.5)
    assert site["n_train"] + site["n_unlabeled"] == total
    assert set(result.arms) == {"federated", "pooled", "local"}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pseudo_label_teacher": "global", "distribution_alignment": True},
        {"pseudo_label_teacher": "global", "pseudo_label_selection": "class_quota"},
    ],
    ids=["local-teacher", "global-teacher-aligned", "class-quota"],
)
def test_a_resumed_semi_supervised_run_ends_bit_for_bit_as_a_straight_one(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    config_path = write_config(
        tmp_path / "c.toml", _tables(strategy="fedprox", rounds=3, **options)
    )
    straight = tmp_path / "straight"
    run_experiment(config=load_config(config_path), out=straight)
    # A crash after round 2: the latest checkpoint pointer still names round 2.
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)
    (crashed / "summary.json").unlink()
    pointer = crashed / "checkpoints" / "federated-latest.json"
    pointer.write_text(json.dumps({"round": 2, "file": "federated-round-00002.safetensors"}))
    run_experiment(config=load_config(config_path), out=crashed, resume=True)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(crashed / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    federated = [x["round"] for x in _lines(crashed) if x["arm"] == "federated"]
    assert federated == [1, 2, 3]


def test_unlabeled_weight_changes_the_model_and_is_refused_for_per_site_models() -> None:
    full = run_experiment(config=config_from_dict(_tables()), out=None).params
    half = run_experiment(config=config_from_dict(_tables(unlabeled_weight=0.5)), out=None).params
    assert not all(np.array_equal(full[k], half[k]) for k in full)
    with pytest.raises(ConfigError, match="federation.unlabeled_weight"):
        run_experiment(
            config=config_from_dict(_tables(strategy="fedbn", unlabeled_weight=0.5)), out=None
        )
    with pytest.raises(ConfigError, match="federation.unlabeled_weight must be in"):
        config_from_dict(_tables(unlabeled_weight=0.0))


def test_teacher_and_alignment_reach_the_sites_only_when_set() -> None:
    plain = training_hparams(config_from_dict(_tables()))
    assert HParam.PSEUDO_LABEL_TEACHER not in plain
    assert HParam.DISTRIBUTION_ALIGNMENT not in plain
    chosen = training_hparams(
        config_from_dict(_tables(pseudo_label_teacher="global", distribution_alignment=True))
    )
    assert chosen[HParam.PSEUDO_LABEL_TEACHER] == "global"
    assert chosen[HParam.DISTRIBUTION_ALIGNMENT] == 1
    assert HParam.SOFT_PSEUDO_LABELS not in chosen
    soft = training_hparams(config_from_dict(_tables(soft_pseudo_labels=True)))
    assert soft[HParam.SOFT_PSEUDO_LABELS] == 1
    off = training_hparams(config_from_dict(_tables(method="none", pseudo_label_teacher="global")))
    assert HParam.PSEUDO_LABEL_TEACHER not in off  # no semi-supervised training: nothing to send


def test_a_global_teacher_with_alignment_trains_a_different_model_than_fixmatch() -> None:
    plain = run_experiment(config=config_from_dict(_tables()), out=None).params
    options = {"pseudo_label_teacher": "global", "distribution_alignment": True}
    chosen = run_experiment(config=config_from_dict(_tables(**options)), out=None).params
    assert not all(np.array_equal(plain[k], chosen[k]) for k in plain)


def test_an_unknown_teacher_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="federation.pseudo_label_teacher"):
        config_from_dict(_tables(pseudo_label_teacher="ema"))


def test_a_train_fraction_makes_a_site_smaller_in_every_arm() -> None:
    full = run_experiment(config=config_from_dict(tiny_tables()), out=None).summary["sites"]
    tables = tiny_tables(
        sites={"hospital_1": {"train_fraction": 0.5}}, baselines={"pooled": True, "local": True}
    )
    result = run_experiment(config=config_from_dict(tables), out=None)
    site = result.summary["sites"]["hospital_1"]
    assert site["n_train"] == round(full["hospital_1"]["n_train"] * 0.5)
    assert "n_unlabeled" not in site  # the rest is gone, not unlabeled
    assert result.summary["sites"]["hospital_2"]["n_train"] == full["hospital_2"]["n_train"]
    assert set(result.arms) == {"federated", "pooled", "local"}


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_a_train_fraction_out_of_range_is_refused_naming_the_key(fraction: float) -> None:
    tables = tiny_tables(sites={"hospital_1": {"train_fraction": fraction}})
    with pytest.raises(ConfigError, match="sites.hospital_1.train_fraction"):
        config_from_dict(tables)


def test_added_unlabeled_changes_train_another_model_and_keep_every_site_in() -> None:
    mean = run_experiment(config=config_from_dict(_tables()), out=None).params
    result = run_experiment(config=config_from_dict(_tables(unlabeled_aggregation="add")), out=None)
    assert not all(np.array_equal(mean[k], result.params[k]) for k in mean)
    assert np.isfinite(result.arms["federated"].global_metrics["auc"])


def test_added_unlabeled_changes_are_refused_for_per_site_models_naming_the_key() -> None:
    tables = _tables(strategy="fedbn", unlabeled_aggregation="add")
    with pytest.raises(ConfigError, match="federation.unlabeled_aggregation"):
        run_experiment(config=config_from_dict(tables), out=None)
    with pytest.raises(ConfigError, match="federation.unlabeled_aggregation"):
        config_from_dict(_tables(unlabeled_aggregation="sum"))


QUOTA: dict[str, Any] = {
    "pseudo_label_teacher": "global",
    "pseudo_label_selection": "class_quota",
    "pseudo_label_quota": 0.25,
}


def test_a_class_quota_reaches_the_sites_only_when_chosen() -> None:
    plain = training_hparams(config_from_dict(_tables()))
    assert HParam.PSEUDO_LABEL_SELECTION not in plain and HParam.PSEUDO_LABEL_QUOTA not in plain
    chosen = training_hparams(config_from_dict(_tables(**QUOTA)))
    assert chosen[HParam.PSEUDO_LABEL_SELECTION] == "class_quota"
    assert chosen[HParam.PSEUDO_LABEL_QUOTA] == 0.25


def test_class_quota_sites_take_part_without_labels_and_train_another_model(
    tmp_path: Path,
) -> None:
    global_teacher = _tables(
        pseudo_label_teacher="global", pseudo_label_threshold=0.99, unlabeled_aggregation="add"
    )
    threshold = run_experiment(config=config_from_dict(global_teacher), out=tmp_path / "t").params
    # A threshold no fresh prediction reaches: the unlabeled sites send nothing at first.
    assert any(x["sites_failed"] for x in _lines(tmp_path / "t"))
    config = config_from_dict(_tables(unlabeled_aggregation="add", **QUOTA))
    result = run_experiment(config=config, out=tmp_path / "run")
    assert not all(np.array_equal(threshold[k], result.params[k]) for k in threshold)
    sites = result.summary["sites"]
    rounds = [x for x in _lines(tmp_path / "run") if x["arm"] == "federated"]
    for name in ("hospital_3", "hospital_4"):
        assert sites[name]["n_train"] == 0 and sites[name]["label_counts"] == {}
    # A quarter of each site's images carry a pseudo-label in every round, so
    # the unlabeled sites send an update every round, though nothing is 0.99 sure.
    assert all(x["sites_failed"] == {} for x in rounds)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"pseudo_label_selection": "flexmatch"}, "federation.pseudo_label_selection"),
        ({"pseudo_label_quota": 0.0}, "federation.pseudo_label_quota must be in"),
        ({"pseudo_label_quota": 1.5}, "federation.pseudo_label_quota must be in"),
    ],
)
def test_a_bad_selection_or_quota_is_refused_naming_the_key(
    options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict(_tables(**options))
