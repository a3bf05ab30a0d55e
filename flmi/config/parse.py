"""Reading a config: TOML files, ``--set`` overrides, typed tables, resolved paths.

Every key is checked against its table's annotation (:func:`_coerce`), each
table checks its own values when it is made (:mod:`flmi.config.schema`), and
:func:`config_from_dict` then runs the checks across tables
(:func:`flmi.config.checks.check_config`).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from flmi.config.checks import check_config
from flmi.config.schema import Config, SiteConfig, SiteFieldError, StrategyConfig
from flmi.core.errors import ConfigError
from flmi.core.suggest import one_line, suggest
from flmi.data.natural_sites import fill_site_count
from flmi.strategies.registry import STRATEGIES

_TABLE_TYPES = typing.get_type_hints(Config)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str | bool | int):
            return value
    elif origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            if option is type(None):
                continue  # TOML has no null: None is only ever a default
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, dict):
            return _build_table(tp, value, key)
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    else:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build_table(cls: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{prefix}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            takes = suggest(
                key,
                names,
                f"[{prefix}] takes: {one_line(names, quote='')}",
                shown=f"'{prefix}.{{}}'",
            )
            raise ConfigError(f"unknown key '{prefix}.{key}'; {takes}")
        values[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    return cls(**values)


def _build_strategy(table: Any) -> StrategyConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"[strategy] must be a table, got {table!r}")
    name = _coerce("strategy.name", table.get("name", "fedavg"), str)
    spec = STRATEGIES.lookup(name)
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            continue
        if key not in spec.options:
            keys = ["name", *spec.options]
            takes = suggest(
                key, keys, f"it takes: {one_line(keys, quote='')}", shown="'strategy.{}'"
            )
            raise ConfigError(f"unknown key 'strategy.{key}' for strategy '{name}'; {takes}")
        options[key] = _coerce(f"strategy.{key}", value, spec.options[key].type)
    return StrategyConfig(name=name, options=options)


def _build_sites(table: Any) -> dict[str, SiteConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"[sites] must hold one table per site, got {table!r}")
    sites: dict[str, SiteConfig] = {}
    for name, values in table.items():
        try:
            sites[name] = _build_table(SiteConfig, values, f"sites.{name}")
        except SiteFieldError as error:
            raise error.for_site(name) from None
    return sites


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate raw TOML tables into a :class:`Config`.

    With ``partition.method = "natural"``, a collection with its own sites
    (Fed-Heart-Disease, Fed-TCGA-BRCA) sets ``partition.num_sites``
    (:mod:`flmi.data.natural_sites`).
    """
    raw = fill_site_count(raw, base=None)
    tables: dict[str, Any] = {}
    for name, table in raw.items():
        if name not in _TABLE_TYPES:
            tables_taken = "a config takes: " + ", ".join(f"[{t}]" for t in _TABLE_TYPES)
            raise ConfigError(
                f"unknown table '[{name}]'; "
                + suggest(name, _TABLE_TYPES, tables_taken, shown="'[{}]'")
            )
        if name == "strategy":
            tables[name] = _build_strategy(table)
        elif name == "sites":
            tables[name] = _build_sites(table)
        else:
            tables[name] = _build_table(_TABLE_TYPES[name], table, name)
    config = Config(**tables)
    check_config(config)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=VALUE``; VALUE is read as a TOML value, else taken as a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example strategy.name=fedavg")
    key, _, value = text.partition("=")
    path = [part.strip() for part in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: KEY must be a dotted path such as federation.rounds")
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``--set`` applied in order."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is not a table")
            node = child
        node[path[-1]] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing file or a syntax error into a :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: Path, *, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file.

    A relative ``data.path``, ``data.cache_dir`` or ``task.init_weights`` is resolved against the
    config file's folder (after ``~`` expansion), so a config runs the same
    from any working directory. With ``partition.method = "natural"``, the
    sites a CSV's or manifest's ``site_column`` names set ``partition.num_sites``.
    """
    raw = apply_overrides(read_toml(path), overrides or [])
    # A natural split's site count is the data's: a CSV's site column is counted here.
    config = config_from_dict(fill_site_count(raw, base=path.parent))
    d = config.data
    data = dataclasses.replace(
        d, path=_from_config_dir(d.path, path), cache_dir=_from_config_dir(d.cache_dir, path)
    )
    task = dataclasses.replace(
        config.task, init_weights=_from_config_dir(config.task.init_weights, path)
    )
    config = dataclasses.replace(config, data=data, task=task)
    revocations = config.deploy.revocation_list
    if revocations:
        config = dataclasses.replace(
            config,
            deploy=dataclasses.replace(
                config.deploy, revocation_list=_from_config_dir(revocations, path)
            ),
        )
    return config


def _from_config_dir(value: str, config_file: Path) -> str:
    """``value`` as a path, ``~`` expanded, relative ones taken from the config file's folder."""
    if not value:
        return value
    expanded = Path(value).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    return str((config_file.parent / expanded).resolve())
