"""Federated Kaplan-Meier: each site sends a table of counts, the server multiplies out.

A site never sends a patient: it sends one row per distinct time,
``(time, events, removed, at_risk)``: deaths observed at that time, patients
leaving follow-up at that time (deaths plus censored), and patients still
followed just before it. The number at risk over the whole federation at any
time is the sum of the sites' numbers at risk, so the server recovers the
pooled Kaplan-Meier estimate exactly.

Exact mode shows every distinct follow-up time with its counts, which is what
a pooled curve needs and all it needs. **Binned mode** (``bin_width > 0``)
protects small counts: each site first rounds every time up to the next
multiple of ``bin_width``, then pools any row with fewer than ``min_count``
patients leaving into the next row (a sparse last row into the one before),
so no row speaks for fewer than ``min_count`` patients and no exact date is
shown. The price is resolution: the curve steps only at bin edges, tied
events within a bin share one risk set (a life-table approximation), and
pooled rows move a few deaths to a later (or, at the tail, earlier) edge. A
site with fewer than ``min_count`` patients in all sends an empty table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flmi.core.errors import DataError

WIRE_KEYS = ("site", "time", "events", "removed", "at_risk")


@dataclass(frozen=True)
class KMTable:
    """What a site sends: per distinct time, events, patients leaving and patients at risk."""

    site: str
    time: tuple[float, ...]
    events: tuple[int, ...]
    removed: tuple[int, ...]
    at_risk: tuple[int, ...]

    def to_wire(self) -> bytes:
        """The table as JSON bytes: the only thing that leaves the site."""
        return json.dumps({k: getattr(self, k) for k in WIRE_KEYS}, sort_keys=True).encode()

    @classmethod
    def from_wire(cls, payload: bytes) -> KMTable:
        """Parse and check a site's table (never unpickled: plain JSON of numbers)."""
        try:
            raw = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"Kaplan-Meier table is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or sorted(raw) != sorted(WIRE_KEYS):
            raise DataError(f"Kaplan-Meier table must hold exactly the keys {list(WIRE_KEYS)}")
        columns = [raw[k] for k in WIRE_KEYS[1:]]
        if not all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
            raise DataError("Kaplan-Meier table columns must be lists of one length")
        table = cls(
            site=str(raw["site"]),
            time=tuple(float(v) for v in raw["time"]),
            events=tuple(int(v) for v in raw["events"]),
            removed=tuple(int(v) for v in raw["removed"]),
            at_risk=tuple(int(v) for v in raw["at_risk"]),
        )
        table.check()
        return table

    def check(self) -> None:
        """Times strictly increasing, ``0 <= events <= removed <= at_risk``, at-risk consistent."""
        t = np.asarray(self.time, dtype=np.float64)
        if t.size and (not np.isfinite(t).all() or (np.diff(t) <= 0).any()):
            raise DataError(f"site '{self.site}': Kaplan-Meier times must increase strictly")
        for d, r, n in zip(self.events, self.removed, self.at_risk, strict=True):
            if not 0 <= d <= r <= n:
                raise DataError(
                    f"site '{self.site}': a Kaplan-Meier row has events {d}, removed {r}, "
                    f"at risk {n}; need 0 <= events <= removed <= at risk"
                )
        for i in range(len(self.time) - 1):
            if self.at_risk[i + 1] != self.at_risk[i] - self.removed[i]:
                raise DataError(
                    f"site '{self.site}': at risk after a row must be at risk minus removed"
                )


def km_table(
    *, site: str, time: np.ndarray, event: np.ndarray, bin_width: float = 0.0, min_count: int = 1
) -> KMTable:
    """A site's table from its own patients (runs at the site).

    Parameters
    ----------
    site
        The site's name.
    time, event
        Follow-up times and event indicators (1: event observed), one per patient.
    bin_width
        0: exact times. Otherwise times are rounded up to multiples of
        ``bin_width`` and rows with fewer than ``min_count`` patients leaving are pooled.
    min_count
        Smallest number of patients a row may speak for (binned mode only).
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(np.int64)
    if t.shape != e.shape or t.ndim != 1:
        raise DataError(f"site '{site}': times and events must be two vectors of one length")
    if not (np.isfinite(t).all() and (t >= 0).all()) or not np.isin(e, (0, 1)).all():
        raise DataError(f"site '{site}': times must be finite and >= 0, events 0 or 1")
    if bin_width < 0:
        raise DataError(f"report.km_bin_width must not be negative, got {bin_width}")
    if bin_width > 0:
        t = np.ceil(t / bin_width) * bin_width
    times, inverse = np.unique(t, return_inverse=True)
    events = np.bincount(inverse, weights=e, minlength=times.size).astype(np.int64)
    removed = np.bincount(inverse, minlength=times.size).astype(np.int64)
    rows = [(float(a), int(b), int(c)) for a, b, c in zip(times, events, removed, strict=True)]
    if bin_width > 0:
        rows = _pool_small(rows, min_count=min_count)
    at_risk, n = [], int(t.size) if rows else 0
    for _, _, r in rows:
        at_risk.append(n)
        n -= r
    return KMTable(
        site=site,
        time=tuple(r[0] for r in rows),
        events=tuple(r[1] for r in rows),
        removed=tuple(r[2] for r in rows),
        at_risk=tuple(at_risk),
    )


def _pool_small(
    rows: list[tuple[float, int, int]], *, min_count: int
) -> list[tuple[float, int, int]]:
    """Pool rows with fewer than ``min_count`` patients leaving into the next (the last: back)."""
    if sum(r[2] for r in rows) < min_count:
        return []
    out: list[tuple[float, int, int]] = []
    carry_events, carry_removed = 0, 0
    for time, events, removed in rows:
        carry_events += events
        carry_removed += removed
        if carry_removed >= min_count:
            out.append((time, carry_events, carry_removed))
            carry_events, carry_removed = 0, 0
    if carry_removed:
        time, events, removed = out[-1]
        out[-1] = (time, events + carry_events, removed + carry_removed)
    return out


@dataclass(frozen=True)
class KMCurve:
    """A Kaplan-Meier curve: survival just after each time, with the pooled counts."""

    time: np.ndarray
    survival: np.ndarray
    events: np.ndarray
    at_risk: np.ndarray

    def to_json(self) -> dict[str, list[float] | list[int]]:
        """Plain lists, ready for ``json``."""
        return {
            "time": [float(v) for v in self.time],
            "survival": [float(v) for v in self.survival],
            "events": [int(v) for v in self.events],
            "at_risk": [int(v) for v in self.at_risk],
        }


def combine_km(tables: Sequence[KMTable]) -> KMCurve:
    """The Kaplan-Meier curve of all the sites' patients together (runs at the server).

    At each time any site reported, the federation's number at risk is the
    sum over sites of each site's number at risk at that time: a site's
    at-risk of its first row at or after the time, or 0 past its last row.
    """
    times = np.unique(
        np.concatenate([np.asarray(t.time, dtype=np.float64) for t in tables] + [np.zeros(0)])
    )
    events = np.zeros(times.size, dtype=np.int64)
    at_risk = np.zeros(times.size, dtype=np.int64)
    for table in tables:
        own = np.asarray(table.time, dtype=np.float64)
        if own.size == 0:
            continue
        rows = np.searchsorted(own, times, side="left")  # first own row with time >= t
        inside = rows < own.size
        at_risk[inside] += np.asarray(table.at_risk, dtype=np.int64)[rows[inside]]
        exact = inside & (own[np.minimum(rows, own.size - 1)] == times)
        events[exact] += np.asarray(table.events, dtype=np.int64)[rows[exact]]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - events / np.maximum(at_risk, 1), 1.0)
    survival = np.cumprod(factor)
    return KMCurve(time=times, survival=survival, events=events, at_risk=at_risk)


def km_curve_json(curve: KMCurve) -> dict[str, list[float] | list[int] | float | None]:
    """A curve with its median survival time (``None`` when it never drops to 0.5)."""
    below = np.flatnonzero(curve.survival <= 0.5)
    median = float(curve.time[below[0]]) if below.size else None
    return {**curve.to_json(), "median": None if median is None or math.isnan(median) else median}
