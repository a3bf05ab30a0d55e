"""``flmi config keys [TABLE]``: every config key with its type and default, read from the schema.

Nothing here is written by hand per key: the tables and their keys are the
fields of :class:`flmi.config.schema.Config` and its table dataclasses, the
choices of a ``Literal`` key are its annotation's, a numeric key's range is
the one :data:`flmi.config.ranges.RANGES` gives (a test checks it against the
schema's own checks), the choices of a key that names a registered part
(``strategy.name``, ``task.model``...) are that registry's names, and each
strategy's own keys come from its spec, help line and range included. A key
added to the schema is listed without any edit here.

Each table is printed as TOML, ``key = default  # type``, so that a line can
be copied into a config; a key whose default is "not set" shows ``(unset)``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from flmi.config.ranges import RANGES
from flmi.config.schema import Config
from flmi.core.errors import ConfigError
from flmi.core.suggest import suggest
from flmi.registry import Registry

#: How a key whose default is ``None`` (not set) shows its default.
UNSET = "(unset)"

_SCALARS = {int: "integer", float: "number", str: "string", bool: "true or false"}


@dataclass(frozen=True)
class KeyLine:
    """One key of a listing.

    Parameters
    ----------
    key
        The key's name inside its table.
    default
        Its default, as TOML (:data:`UNSET` when not set by default).
    kind
        Its type, and its choices where the schema or a registry declares them.
    """

    key: str
    default: str
    kind: str


@dataclass(frozen=True)
class TableListing:
    """One table of a listing.

    Parameters
    ----------
    name
        The table's dotted name (``federation``, ``data.transforms``, ``sites.NAME``).
    about
        One line on what it holds, from its dataclass's docstring.
    keys
        Its keys, in schema order.
    sections
        Keys that apply under a condition, each with its title (for
        ``[strategy]``: each strategy's own keys).
    """

    name: str
    about: str
    keys: tuple[KeyLine, ...]
    sections: tuple[tuple[str, tuple[KeyLine, ...]], ...] = ()


def toml_value(value: Any) -> str:
    """``value`` as TOML text (``'sgd'``, ``true``, ``[1, 2]``); :data:`UNSET` for ``None``."""
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if "'" not in value and "\n" not in value else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def _kind(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(toml_value(v) for v in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        options = [t for t in typing.get_args(tp) if t is not type(None)]
        return " or ".join(_kind(t) for t in options)
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_kind(item)}s" if item in _SCALARS else f"list of {_kind(item)}"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))


def _registries() -> list[Registry[Any]]:
    """Every registry whose names a config key takes (imported here, on use)."""
    from flmi.data.source_registry import SOURCES
    from flmi.runtime.registry import RUNTIMES
    from flmi.strategies.registry import STRATEGIES
    from flmi.tasks.model_registry import MODELS
    from flmi.tasks.registry import TASKS

    return [SOURCES, TASKS, MODELS, STRATEGIES, RUNTIMES]


def _registered_choices() -> dict[str, list[str]]:
    """``{dotted key: registered names}`` for every key that names a registered part."""
    return {registry.field: registry.names() for registry in _registries()}


def _about(cls: type) -> str:
    """The first line of a table's docstring, less its leading ``[name]``."""
    first = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    about = first.partition("``: ")[2] if first.startswith("``[") else first
    return about.replace("``", "`")


def _table_keys(cls: type, prefix: str, choices: dict[str, list[str]]) -> list[KeyLine]:
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            continue  # a table inside the table, listed as [prefix.name] of its own
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        else:
            assert f.default_factory is not dataclasses.MISSING
            default = f.default_factory()
        names = choices.get(f"{prefix}.{f.name}")
        kind = f"{_kind(tp)}, one of " + ", ".join(map(toml_value, names)) if names else _kind(tp)
        allowed = RANGES.get(f"{prefix}.{f.name}")
        kind += f", {allowed.text()}" if allowed is not None else ""
        lines.append(KeyLine(key=f.name, default=toml_value(default), kind=kind))
    return lines


def _strategy_listing(choices: dict[str, list[str]]) -> TableListing:
    """``[strategy] name``, then the keys each strategy takes, from its spec."""
    from flmi.config.schema import StrategyConfig
    from flmi.strategies.registry import STRATEGIES

    names = choices.get("strategy.name", [])
    name = KeyLine(
        key="name",
        default=toml_value(StrategyConfig().name),
        kind="string, one of " + ", ".join(map(toml_value, names)),
    )
    sections = []
    for strategy in names:
        spec = STRATEGIES[strategy]
        keys = tuple(
            KeyLine(key=k, default=toml_value(o.default), kind=f"{_kind(o.type)}: {o.help}")
            for k, o in spec.options.items()
        )
        if keys:
            sections.append((f"with name = {toml_value(strategy)}", keys))
    return TableListing(
        name="strategy", about=_about(StrategyConfig), keys=(name,), sections=tuple(sections)
    )


def _nested(cls: type, prefix: str) -> list[tuple[str, type]]:
    """``(dotted name, table class)`` for ``cls`` and every table inside it, in field order."""
    out = [(prefix, cls)]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out += _nested(tp, f"{prefix}.{f.name}")
    return out


def schema_tables() -> dict[str, type | None]:
    """``{table name: its dataclass}`` for every table of a config, in config order.

    ``[sites.NAME]`` stands for every site's table; a table inside a table
    is listed under its dotted name (``data.transforms``), after its parent.
    ``[strategy]`` maps to ``None``: its keys are the chosen strategy's.
    """
    tables: dict[str, type | None] = {}
    for name, tp in typing.get_type_hints(Config).items():
        if name == "strategy":
            tables[name] = None
            continue
        if typing.get_origin(tp) is dict:
            tp, name = typing.get_args(tp)[1], f"{name}.NAME"
        tables.update(_nested(tp, name))
    return tables


def listing(table: str | None = None) -> list[TableListing]:
    """Every table's keys (or only ``table``'s, and the tables inside it), in config order.

    Raises
    ------
    ConfigError
        ``table`` is no table of a config; the message suggests the nearest one.
    """
    choices = _registered_choices()
    classes = schema_tables()
    names = list(classes)
    if table is not None:
        wanted = table.strip().strip("[]")
        wanted = "sites.NAME" if wanted == "sites" else wanted
        names = [n for n in names if n == wanted or n.startswith(f"{wanted}.")]
        if not names:
            listed = ", ".join(f"[{n}]" for n in classes)
            raise ConfigError(
                f"flmi config keys: no table [{wanted}]; "
                + suggest(wanted, classes, f"a config takes: {listed}")
            )
    out = []
    for name in names:
        cls = classes[name]
        if cls is None:
            out.append(_strategy_listing(choices))
        else:
            keys = tuple(_table_keys(cls, name, choices))
            out.append(TableListing(name=name, about=_about(cls), keys=keys))
    return out


def _lines(keys: tuple[KeyLine, ...]) -> list[str]:
    width = max(len(f"{k.key} = {k.default}") for k in keys)
    return [f"{f'{k.key} = {k.default}':<{width}}  # {k.kind}" for k in keys]


def render(tables: list[TableListing]) -> str:
    """The listing as text: a ``[name]  # about`` line per table, then ``key = default  # type``."""
    blocks = []
    for t in tables:
        lines = [f"[{t.name}]" + (f"  # {t.about}" if t.about else "")]
        if t.keys:
            lines += _lines(t.keys)
        for title, keys in t.sections:
            lines += [f"# {title}:", *_lines(keys)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
