"""A misspelt name is answered with the nearest valid one first, then every valid one on a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.core.suggest import nearest, one_line, suggest
from tests.conftest import tiny_tables, write_config


def _error(tables: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(tables)
    return str(caught.value)


def test_the_nearest_name_ignores_case_and_none_is_offered_when_nothing_is_close() -> None:
    assert nearest("roundz", ["rounds", "seed", "lr"]) == "rounds"
    assert nearest("ROUNDS", ["rounds", "seed"]) == "rounds"
    assert nearest("xyzzy", ["rounds", "seed"]) is None
    assert suggest("xyzzy", ["rounds"], "choose one of 'rounds'") == "choose one of 'rounds'"
    assert one_line(["b", "a", "b"]) == "'a', 'b'"


def test_a_misspelt_key_suggests_the_key_with_its_table() -> None:
    message = _error(tiny_tables(federation={"roundz": 3}))

    assert message.startswith(
        "unknown key 'federation.roundz'; did you mean 'federation.rounds'? [federation] takes: "
        "batch_size, "
    )
    assert "\n" not in message and "['" not in message


def test_a_misspelt_key_in_a_sites_table_suggests_the_key_of_that_site() -> None:
    tables = tiny_tables()
    tables["sites"] = {"hospital_1": {"local_epoch": 2}}

    message = _error(tables)

    assert message.startswith(
        "unknown key 'sites.hospital_1.local_epoch'; "
        "did you mean 'sites.hospital_1.local_epochs'? [sites.hospital_1] takes: "
    )


def test_a_misspelt_strategy_option_suggests_the_option() -> None:
    message = _error(tiny_tables(strategy={"name": "fedadam", "server_lrr": 0.1}))

    assert message.startswith(
        "unknown key 'strategy.server_lrr' for strategy 'fedadam'; "
        "did you mean 'strategy.server_lr'? It takes: "
    )


def test_a_misspelt_table_suggests_the_table() -> None:
    tables = tiny_tables()
    tables["federaton"] = tables.pop("federation")

    message = _error(tables)

    assert message.startswith(
        "unknown table '[federaton]'; did you mean '[federation]'? A config takes: [data], "
    )


@pytest.mark.parametrize(
    ("table", "key", "given", "suggested"),
    [
        ("strategy", "name", "fedadm", "fedadam"),
        ("task", "name", "clasification", "classification"),
        ("task", "model", "densenet12", "densenet121"),
        ("data", "source", "medmnst", "medmnist"),
        ("runtime", "name", "inproces", "inprocess"),
    ],
)
def test_a_misspelt_registered_name_suggests_the_nearest_registered_one(
    table: str, key: str, given: str, suggested: str
) -> None:
    message = _error(tiny_tables(**{table: {key: given}}))

    assert f"{table}.{key}: unknown " in message
    assert f"'{given}'; did you mean '{suggested}'? Choose one of '" in message
    assert "['" not in message


def test_the_command_line_prints_the_suggestion_on_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flmi.cli import main

    config = write_config(tmp_path / "c.toml", tiny_tables())
    code = main(
        ["run", str(config), "--out", str(tmp_path / "run"), "--set", "strategy.name=fedprx"]
    )

    out = capsys.readouterr().out
    assert code == 2 and not (tmp_path / "run").exists()
    assert out.startswith(
        "error: strategy.name: unknown strategy 'fedprx'; did you mean 'fedprox'? Choose one of "
    )
    assert out.count("\n") == 1


def test_resolving_a_strategy_s_options_suggests_the_misspelt_one() -> None:
    from flmi.strategies.registry import STRATEGIES

    with pytest.raises(ConfigError) as caught:
        STRATEGIES["fedprox"].resolve_options({"mu_": 0.1})

    message = str(caught.value)
    assert message.startswith(
        "unknown key 'strategy.mu_'; did you mean 'strategy.mu'? This strategy takes: "
    )
    assert "['" not in message


def test_a_model_that_does_not_serve_the_task_suggests_one_that_does_without_a_raw_list() -> None:
    from flmi.tasks.model_registry import network_for

    with pytest.raises(ConfigError) as caught:
        network_for(model="unet", task="classification", spatial_dims=2)

    message = str(caught.value)
    assert message.startswith("task.model: 'unet' is not a classification model; choose one of ")
    assert "'small_cnn'" in message and "[" not in message


def test_a_task_that_does_not_fit_the_source_lists_the_sources_without_a_raw_list() -> None:
    message = _error(tiny_tables(task={"name": "survival"}))

    assert "does not fit data.source = 'synthetic'; use one of '" in message
    assert "['" not in message
