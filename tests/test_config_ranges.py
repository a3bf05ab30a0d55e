"""Every range ``flmi config keys`` shows is the one the schema enforces, on and past each bound."""

from __future__ import annotations

import typing

import pytest

from flmi.config.keys_listing import listing, render, schema_tables
from flmi.config.ranges import RANGES, Range
from flmi.core.errors import ConfigError


def _table_and_type(dotted: str) -> tuple[type, type]:
    table, _, key = dotted.rpartition(".")
    cls = schema_tables()[table]
    assert cls is not None, dotted
    tp = typing.get_type_hints(cls)[key]
    options = [t for t in typing.get_args(tp) if t is not type(None)] or [tp]
    return cls, options[0]


def _accepts(cls: type, key: str, value: float) -> bool:
    try:
        cls(**{key: value})
    except ConfigError:
        return False
    return True


def _probes(r: Range, tp: type) -> list[tuple[float, bool]]:
    """``(value, accepted)`` on and just past each bound of ``r``."""
    step: float = 1 if tp is int else 1e-6
    out = []
    if r.low is not None:
        out += [(r.low, not r.low_open), (r.low - step, False)]
        if r.low_open:
            out.append((r.low + step, True))
    if r.high is not None:
        out += [(r.high, not r.high_open), (r.high + step, False)]
        if r.high_open:
            out.append((r.high - step, True))
    return [(tp(v), ok) for v, ok in out]


@pytest.mark.parametrize("dotted", sorted(RANGES))
def test_the_range_listed_is_the_range_the_schema_enforces(dotted: str) -> None:
    cls, tp = _table_and_type(dotted)
    key = dotted.rpartition(".")[2]

    for value, ok in _probes(RANGES[dotted], tp):
        assert _accepts(cls, key, value) is ok, f"{dotted} = {value} accepted: {not ok}"


def test_the_listing_shows_each_key_s_range_after_its_type() -> None:
    (federation,) = listing("federation")
    kinds = {k.key: k.kind for k in federation.keys}

    assert kinds["rounds"] == "integer, >= 1"
    assert kinds["fraction"] == "number, in (0, 1]"
    assert kinds["momentum"] == "number, in [0, 1)"
    text = render(listing("report"))
    assert "histogram_bins = 100" in text and "# integer, in [2, 10000]" in text
    assert "target_sensitivity = (unset)" in text and "number, in (0, 1]" in text


def test_every_ranged_key_is_listed_with_its_range() -> None:
    shown: dict[str, str] = {}
    for table in listing():
        shown.update({f"{table.name}.{k.key}": k.kind for k in table.keys})

    for dotted, allowed in RANGES.items():
        assert shown[dotted].endswith(f", {allowed.text()}"), dotted


def test_range_text_reads_like_an_interval() -> None:
    assert Range(low=0, high=1, low_open=True, high_open=True).text() == "in (0, 1)"
    assert Range(low=0.5).text() == ">= 0.5"
    assert Range(high=3, high_open=True).text() == "< 3"
