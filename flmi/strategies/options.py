"""Typed, documented strategy options: one frozen dataclass per strategy family.

A strategy's options are a frozen dataclass whose fields carry a type, a
default and a one-line help (``field(metadata={"help": ...})``), and whose
``__post_init__`` checks ranges with :func:`require`. The registry reads the
fields with :func:`options_of`, so the config, ``flmi strategies`` and the
Python constructors share one source of defaults.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from flmi.core.errors import ConfigError

OptionValue = bool | int | float | str


@dataclass(frozen=True)
class Option:
    """One ``[strategy]`` key a strategy takes.

    Parameters
    ----------
    type
        ``bool``, ``int``, ``float`` or ``str``; the config accepts an integer
        where a float is expected.
    default
        The value used when the key is absent.
    help
        One line: what the key does and its allowed range.
    """

    type: type
    default: OptionValue
    help: str


def help_field(default: OptionValue, help: str) -> Any:
    """A dataclass field with a default and a one-line help, for an options class."""
    return dataclasses.field(default=default, metadata={"help": help})


def options_of(cls: type) -> dict[str, Option]:
    """The :class:`Option` of every field of an options dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Option] = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING or "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} needs a default and a help line")
        out[f.name] = Option(type=hints[f.name], default=f.default, help=str(f.metadata["help"]))
    return out


def require(ok: bool, *, key: str, value: OptionValue, expected: str) -> None:
    """Raise :class:`ConfigError` naming ``strategy.<key>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"strategy.{key} must be {expected}, got {value!r}")


def positive(value: float) -> bool:
    """Whether ``value`` is a finite number above 0 (NaN and infinity are not)."""
    return math.isfinite(value) and value > 0


def check_type(key: str, value: Any, tp: type) -> OptionValue:
    """``value`` checked against ``tp`` (an int is accepted, as a float, where a float is due).

    Raises
    ------
    ConfigError
        Naming ``strategy.<key>`` and the expected type.
    """
    is_bool = isinstance(value, bool)
    if tp is bool and is_bool:
        return bool(value)
    if tp is int and isinstance(value, int) and not is_bool:
        return int(value)
    if tp is float and isinstance(value, int | float) and not is_bool:
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(f"strategy.{key}: expected {names.get(tp, tp.__name__)}, got {value!r}")
