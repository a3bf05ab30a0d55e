from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from flmi.config import Config, apply_overrides, config_from_dict, load_config
from flmi.core.errors import ConfigError
from flmi.data.sources import load_data
from tests.conftest import REPO, tiny_tables, write_config


def test_defaults_form_a_valid_config() -> None:
    assert config_from_dict({}) == Config()


def test_unknown_key_names_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'federation.roundz'.*rounds"):
        config_from_dict({"federation": {"roundz": 3}})


def test_unknown_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown table '\[federaton\]'"):
        config_from_dict({"federaton": {"rounds": 3}})


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"federation": {"rounds": "ten"}}, r"federation.rounds: expected an integer, got 'ten'"),
        ({"federation": {"lr": True}}, r"federation.lr: expected a number"),
        ({"baselines": {"pooled": 1}}, r"baselines.pooled: expected true or false"),
        ({"runtime": {"device": "tpu"}}, r"runtime.device: expected one of 'cpu', 'cuda', 'auto'"),
        ({"partition": {"method": "random"}}, r"partition.method: expected one of"),
    ],
)
def test_wrong_type_names_the_key_and_what_was_expected(tables: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tables)


def test_integer_is_accepted_where_a_number_is_expected() -> None:
    assert config_from_dict({"federation": {"lr": 1}}).federation.lr == 1.0


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"strategy.name: unknown strategy 'fedfoo'.*fedavg"):
        config_from_dict({"strategy": {"name": "fedfoo"}})


def test_option_the_strategy_does_not_take_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'strategy.mu' for strategy 'fedavg'"):
        config_from_dict({"strategy": {"name": "fedavg", "mu": 0.1}})


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        ({"federation": {"rounds": 0}}, "federation.rounds"),
        ({"federation": {"fraction": 0.0}}, "federation.fraction"),
        ({"federation": {"min_sites": 9}}, "federation.min_sites"),
        ({"partition": {"alpha": -1.0}}, "partition.alpha"),
        ({"task": {"positive_label": 2}}, "task.positive_label"),
        ({"data": {"source": "medmnist"}}, "data.path"),
        ({"data": {"source": "medmnist", "path": "x.npz"}}, "partition.method"),
        ({"partition": {"method": "iid"}}, "partition.method"),
        ({"report": {"histogram_bins": 1}}, "report.histogram_bins"),
        ({"report": {"target_sensitivity": 1.5}}, "report.target_sensitivity"),
        ({"report": {"target_sensitivity": 0}}, "report.target_sensitivity"),
        ({"runtime": {"tensorboard": "yes"}}, "runtime.tensorboard"),
    ],
)
def test_values_out_of_range_name_the_key(tables: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(tables)


def test_set_overrides_any_key_by_dotted_path(tiny_config: Path) -> None:
    config = load_config(
        tiny_config, overrides=["federation.rounds=7", "strategy.name=fedavg", "task.augment=true"]
    )
    assert config.federation.rounds == 7 and config.task.augment is True


def test_set_with_an_unknown_key_is_a_config_error(tiny_config: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'federation.nope'"):
        load_config(tiny_config, overrides=["federation.nope=1"])


def test_set_without_an_equals_sign_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["federation.rounds"])


def test_set_value_that_is_not_toml_is_taken_as_a_string() -> None:
    raw = apply_overrides({}, ["strategy.name=fedavg"])
    assert raw == {"strategy": {"name": "fedavg"}}


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*absent.toml"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[federation\nrounds = 1\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config(path)


def test_relative_data_path_is_resolved_from_the_config_folder(tmp_path: Path) -> None:
    tables = tiny_tables(
        data={"source": "medmnist", "path": "sub/file.npz"}, partition={"method": "iid"}
    )
    del tables["data"]["image_size"], tables["data"]["n_patients"]
    config = load_config(write_config(tmp_path / "c.toml", tables))
    assert config.data.path == str((tmp_path / "sub" / "file.npz").resolve())


EXAMPLES = sorted(
    p.relative_to(REPO / "examples")
    for p in (REPO / "examples").rglob("*.toml")
    if "federation_config" not in tomllib.loads(p.read_text()).get("data", {})  # SITE.toml files
    # The plug-in package's files need the package installed (tests/test_plugin_package.py).
    and (REPO / "examples" / "plugin") not in p.parents
)


@pytest.mark.parametrize("name", EXAMPLES, ids=[str(n) for n in EXAMPLES])
def test_shipped_examples_are_valid_configs(name: Path) -> None:
    load_config(REPO / "examples" / name)


def test_config_round_trips_through_its_snapshot(tmp_path: Path, tiny_config: Path) -> None:
    import tomli_w

    config = load_config(tiny_config)
    snapshot = write_config(tmp_path / "snap.toml", config.to_dict())
    assert load_config(snapshot) == config
    assert tomli_w.dumps(config.to_dict())


def test_partition_seed_fixes_the_data_while_the_training_seed_varies(tmp_path: Path) -> None:
    fixed = [
        load_data(
            config_from_dict(
                {"partition": {"seed": 7}, "federation": {"seed": s}, "data": {"n_patients": 200}}
            )
        )
        for s in (0, 1)
    ]
    a, b = (d.sites["hospital_1"].train.x for d in fixed)
    assert np.array_equal(a, b)
    varying = [
        load_data(config_from_dict({"federation": {"seed": s}, "data": {"n_patients": 200}}))
        for s in (0, 1)
    ]
    assert not np.array_equal(
        varying[0].sites["hospital_1"].train.x, varying[1].sites["hospital_1"].train.x
    )
