"""``flmi config keys`` lists every key of the schema with its default: it cannot drift."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from typing import Any

import pytest

from flmi.config.keys_listing import UNSET, listing, render
from flmi.config.schema import Config, SiteConfig, TransformsConfig
from flmi.core.errors import ConfigError
from flmi.strategies.registry import STRATEGIES


def _parsed(text: str) -> dict[str, dict[str, Any]]:
    """``{table: {key: default}}`` read back from the listing (``(unset)`` read as ``None``)."""
    tables: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = tables.setdefault(line.split("]")[0][1:], {})
        elif line.startswith("# with name = "):
            strategy = tomllib.loads(f"v = {line.removeprefix('# with name = ')[:-1]}")["v"]
            current = tables.setdefault(f"strategy:{strategy}", {})
        elif line and not line.startswith("#"):
            assignment = line.split("  # ")[0]
            key, _, value = assignment.partition(" = ")
            current[key] = None if value.strip() == UNSET else tomllib.loads(assignment)[key]
    return tables


def _expected_tables() -> dict[str, type]:
    """Every table class of the schema by dotted name, found here independently of the listing."""
    tables: dict[str, type] = {}
    for name, tp in typing.get_type_hints(Config).items():
        if name == "strategy":
            continue
        if name == "sites":
            tables["sites.NAME"] = SiteConfig
            continue
        tables[name] = tp
    tables["data.transforms"] = TransformsConfig
    return tables


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    assert f.default_factory is not dataclasses.MISSING
    return f.default_factory()


def test_every_key_of_every_table_is_listed_with_its_default() -> None:
    listed = _parsed(render(listing()))

    for table, cls in _expected_tables().items():
        hints = typing.get_type_hints(cls)
        expected = {
            f.name: _default(f)
            for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(hints[f.name])
        }
        assert listed[table] == expected, table
    assert listed["strategy"] == {"name": "fedavg"}


def test_every_strategy_option_is_listed_with_its_default() -> None:
    listed = _parsed(render(listing("strategy")))

    for name, spec in STRATEGIES.items():
        if spec.options:
            assert listed[f"strategy:{name}"] == spec.defaults(), name
        else:
            assert f"strategy:{name}" not in listed


def test_a_key_shows_its_type_and_its_declared_or_registered_choices() -> None:
    federation = render(listing("federation"))
    data = render(listing("data"))

    assert re.search(r"^rounds = 10 +# integer, >= 1$", federation, re.M)  # and its range
    assert re.search(r"^optimizer = 'sgd' +# one of 'sgd', 'adam'$", federation, re.M)
    assert re.search(r"^source = 'synthetic' +# string, one of 'csv', .*'medmnist'", data, re.M)
    assert "\n[data.transforms]  # " in data  # a table inside the table comes with it
    assert re.search(r"^seed = \(unset\) +# integer$", render(listing("partition")), re.M)


def test_one_table_is_listed_alone_and_brackets_are_accepted() -> None:
    assert [t.name for t in listing("[federation]")] == ["federation"]
    assert [t.name for t in listing("sites")] == ["sites.NAME"]


def test_an_unknown_table_suggests_the_nearest_one() -> None:
    with pytest.raises(ConfigError, match=r"no table \[federaton\]; did you mean 'federation'\?"):
        listing("federaton")


def test_the_command_prints_the_listing_and_run_help_points_to_it(capsys) -> None:  # type: ignore[no-untyped-def]
    from flmi.cli import main

    assert main(["config", "keys", "baselines"]) == 0
    out = capsys.readouterr().out
    assert out == render(listing("baselines"))
    assert out.startswith("[baselines]  # ") and "pooled = false" in out

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "flmi config keys [TABLE]" in " ".join(capsys.readouterr().out.split())
