"""The layout of ``summary.json``, typed: what its writers build and its readers get back.

A simulation and a gRPC deployment both write a :class:`Summary`
(:meth:`Summary.to_json`); the report, the model card and the benchmarks read
one back with :func:`read_summary`, which names the file and the field of
anything that does not fit. ``schema_version`` says which layout a file has:
:data:`SCHEMA_VERSION` now; a file without it was written before the field
existed and is read as the same layout, with ``schema_version`` 0
(:data:`PRE_SCHEMA`).

Blocks owned by other modules (each site's split sizes, the data report, the
privacy block, the operating threshold, the scanner table) are kept as JSON
objects; their writers document them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from flmi.core.errors import RunDirError
from flmi.core.keys import Record

#: The layout this flmi writes.
SCHEMA_VERSION = 1
#: ``schema_version`` of a file written before the field existed (the same layout).
PRE_SCHEMA = 0

JsonObject = Mapping[str, Any]
MetricsJson = Mapping[str, float | None]
#: A 95 % interval; ``None`` for an end that is undefined (NaN).
Interval = tuple[float | None, float | None]


class SummaryError(RunDirError):
    """A ``summary.json`` that does not fit the layout; the message names the file and field."""


@dataclass(frozen=True)
class ArmIntervals:
    """Bootstrap 95 % intervals of one arm: central (``global``) and per site."""

    global_intervals: Mapping[str, Interval] | None
    per_site: Mapping[str, Mapping[str, Interval]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``ci`` object: intervals as ``[low, high]`` lists, sorted."""
        return {
            Record.GLOBAL: _intervals_json(self.global_intervals),
            Record.PER_SITE: {s: _intervals_json(c) for s, c in sorted(self.per_site.items())},
        }

    @classmethod
    def from_json(cls, raw: object, *, where: str, source: str) -> ArmIntervals:
        """Read a ``ci`` object; ``where`` is its field path, ``source`` the file."""
        obj = _object(raw, where, source)
        per_site = _object(obj.get(Record.PER_SITE, {}), f"{where}.per_site", source)
        return cls(
            global_intervals=_intervals(obj.get(Record.GLOBAL), f"{where}.global", source),
            per_site={
                s: _required(_intervals(c, f"{where}.per_site.{s}", source), f"{where}.{s}", source)
                for s, c in per_site.items()
            },
        )


@dataclass(frozen=True)
class ArmSummary:
    """One arm's final-round numbers.

    Parameters
    ----------
    per_site
        Each site's metrics on its own test split.
    site_mean
        Their mean over sites.
    global_metrics
        Metrics on the central test set (``global``); ``None`` where there is
        no one model to score centrally.
    ci
        Bootstrap intervals. A simulation writes them, and with them the
        ``global`` key even when it is ``null``; a deployment writes neither.
    threshold, at_threshold
        The operating threshold (chosen on validation data) and the test
        sensitivity and specificity there, for tasks with a positive class.
    """

    per_site: Mapping[str, MetricsJson]
    site_mean: MetricsJson
    global_metrics: MetricsJson | None = None
    ci: ArmIntervals | None = None
    threshold: JsonObject | None = None
    at_threshold: JsonObject | None = None

    def to_json(self) -> dict[str, Any]:
        """The arm's object in ``summary.json``'s ``arms``."""
        out: dict[str, Any] = {
            Record.PER_SITE: {s: dict(m) for s, m in sorted(self.per_site.items())},
            Record.SITE_MEAN: dict(self.site_mean),
        }
        if self.ci is not None or self.global_metrics is not None:
            out[Record.GLOBAL] = _copy(self.global_metrics)
        if self.ci is not None:
            out[Record.CI] = self.ci.to_json()
        if self.threshold is not None:
            out[Record.THRESHOLD] = dict(self.threshold)
        if self.at_threshold is not None:
            out[Record.AT_THRESHOLD] = dict(self.at_threshold)
        return out

    @classmethod
    def from_json(cls, raw: object, *, where: str, source: str) -> ArmSummary:
        """Read one arm's object; ``where`` is its field path, ``source`` the file."""
        obj = _object(raw, where, source)
        per_site = _object(_get(obj, Record.PER_SITE, where, source), f"{where}.per_site", source)
        ci = obj.get(Record.CI)
        return cls(
            per_site={s: _metrics(m, f"{where}.per_site.{s}", source) for s, m in per_site.items()},
            site_mean=_metrics(
                _get(obj, Record.SITE_MEAN, where, source), f"{where}.site_mean", source
            ),
            global_metrics=_optional_metrics(obj.get(Record.GLOBAL), f"{where}.global", source),
            ci=None
            if ci is None
            else ArmIntervals.from_json(ci, where=f"{where}.ci", source=source),
            threshold=_optional_object(obj.get(Record.THRESHOLD), f"{where}.threshold", source),
            at_threshold=_optional_object(
                obj.get(Record.AT_THRESHOLD), f"{where}.at_threshold", source
            ),
        )


@dataclass(frozen=True)
class Summary:
    """Everything ``summary.json`` holds.

    Parameters
    ----------
    arms
        Final numbers per arm (``federated``; a simulation's ``pooled`` and ``local``).
    rounds, seed, torch_threads, strategy
        How the run was trained.
    privacy
        The privacy settings and what was spent (:func:`flmi.report.summary.privacy_block`).
    versions
        Versions of everything that shapes the numbers.
    sites
        A simulation: each site's split sizes and suppressed label counts
        (:func:`flmi.report.summary.sites_json`); a deployment: the site names.
    wall_s, device, plugins, data
        A simulation's wall time, torch device, plug-in record and data report.
    runtime
        ``"grpc"`` for a deployment; absent for a simulation.
    sites_left_out, unreadable, site_scanners
        Sites without labeled training data, files that could not be read,
        and the scanner settings of a scanner-shift partition, where there are any.
    contributions
        Each site's Shapley and leave-one-out value, where they were scored
        (:meth:`flmi.forensics.contribution.Contributions.to_json`).
    schema_version
        The layout: :data:`SCHEMA_VERSION`, or :data:`PRE_SCHEMA` for a file
        written before the field existed.
    """

    arms: Mapping[str, ArmSummary]
    rounds: int
    seed: int
    torch_threads: int
    strategy: str
    privacy: JsonObject
    versions: Mapping[str, str]
    sites: JsonObject | tuple[str, ...]
    wall_s: float | None = None
    device: str | None = None
    plugins: JsonObject | None = None
    data: JsonObject | None = None
    runtime: str | None = None
    sites_left_out: Mapping[str, str] | None = None
    unreadable: JsonObject | None = None
    site_scanners: JsonObject | None = None
    contributions: JsonObject | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` document (keys of absent optional fields left out)."""
        out: dict[str, Any] = {
            Record.SCHEMA_VERSION: self.schema_version,
            Record.ARMS: {a: arm.to_json() for a, arm in self.arms.items()},
            Record.ROUNDS: self.rounds,
            Record.SEED: self.seed,
            Record.TORCH_THREADS: self.torch_threads,
            Record.STRATEGY: self.strategy,
            Record.PRIVACY: _copy(self.privacy),
            Record.VERSIONS: dict(self.versions),
            Record.SITES: list(self.sites) if isinstance(self.sites, tuple) else _copy(self.sites),
        }
        optional: dict[str, object] = {
            Record.WALL_S: self.wall_s,
            Record.DEVICE: self.device,
            Record.PLUGINS: self.plugins,
            Record.DATA: self.data,
            Record.RUNTIME: self.runtime,
            Record.SITES_LEFT_OUT: self.sites_left_out,
            Record.UNREADABLE: self.unreadable,
            Record.SITE_SCANNERS: self.site_scanners,
            Record.CONTRIBUTIONS: self.contributions,
        }
        out.update({k: _copy(v) for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_json(cls, raw: object, *, source: str = "summary.json") -> Summary:
        """Read a parsed ``summary.json``; errors name ``source`` and the field.

        Raises
        ------
        SummaryError
            A field is missing or has the wrong type, or the file was written
            in a newer layout than this flmi reads.
        """
        obj = _object(raw, "(the document)", source)
        version = obj.get(Record.SCHEMA_VERSION, PRE_SCHEMA)
        if not _is_int(version) or version < PRE_SCHEMA:
            _fail(source, Record.SCHEMA_VERSION, "a non-negative integer", version)
        if version > SCHEMA_VERSION:
            raise SummaryError(
                f"{source}: schema_version {version} is newer than this flmi reads "
                f"(up to {SCHEMA_VERSION}); read it with the flmi that wrote it "
                f"(versions.flmi) or a later one"
            )
        arms = _object(_get(obj, Record.ARMS, "", source), "arms", source)
        sites = _get(obj, Record.SITES, "", source)
        if isinstance(sites, list):
            sites_value: JsonObject | tuple[str, ...] = tuple(
                _str(s, f"sites[{i}]", source) for i, s in enumerate(sites)
            )
        else:
            sites_value = _object(sites, "sites", source)
        versions = _object(_get(obj, Record.VERSIONS, "", source), "versions", source)
        left_out = _optional_object(obj.get(Record.SITES_LEFT_OUT), "sites_left_out", source)
        wall_s = obj.get(Record.WALL_S)
        if wall_s is not None and not _is_number(wall_s):
            _fail(source, Record.WALL_S, "a number of seconds", wall_s)
        return cls(
            schema_version=version,
            arms={
                a: ArmSummary.from_json(v, where=f"arms.{a}", source=source)
                for a, v in arms.items()
            },
            rounds=_int(_get(obj, Record.ROUNDS, "", source), "rounds", source),
            seed=_int(_get(obj, Record.SEED, "", source), "seed", source),
            torch_threads=_int(
                _get(obj, Record.TORCH_THREADS, "", source), "torch_threads", source
            ),
            strategy=_str(_get(obj, Record.STRATEGY, "", source), "strategy", source),
            privacy=_object(_get(obj, Record.PRIVACY, "", source), "privacy", source),
            versions={k: _str(v, f"versions.{k}", source) for k, v in versions.items()},
            sites=sites_value,
            wall_s=wall_s,
            device=_optional_str(obj.get(Record.DEVICE), "device", source),
            plugins=_optional_object(obj.get(Record.PLUGINS), "plugins", source),
            data=_optional_object(obj.get(Record.DATA), "data", source),
            runtime=_optional_str(obj.get(Record.RUNTIME), "runtime", source),
            sites_left_out=(
                None
                if left_out is None
                else {s: _str(r, f"sites_left_out.{s}", source) for s, r in left_out.items()}
            ),
            unreadable=_optional_object(obj.get(Record.UNREADABLE), "unreadable", source),
            site_scanners=_optional_object(obj.get(Record.SITE_SCANNERS), "site_scanners", source),
            contributions=_optional_object(obj.get(Record.CONTRIBUTIONS), "contributions", source),
        )


def read_summary(path: Path) -> Summary:
    """Read and check ``path`` (a run directory's ``summary.json``).

    Raises
    ------
    SummaryError
        The file is not JSON, or a field does not fit (the message names it).
    FileNotFoundError
        There is no file at ``path``.
    """
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SummaryError(f"{path}: not JSON ({exc}); rerun to write it again") from None
    return Summary.from_json(raw, source=str(path))


def _copy(value: object) -> Any:
    """A plain-JSON deep copy (mappings to dicts, tuples to lists), so callers share nothing."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _intervals_json(
    intervals: Mapping[str, Interval] | None,
) -> dict[str, list[float | None]] | None:
    if intervals is None:
        return None
    return {k: list(pair) for k, pair in sorted(intervals.items())}


def _fail(source: str, where: str, expected: str, value: object) -> NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise SummaryError(
        f"{source}: field '{where}' must be {expected}, got {type(value).__name__} {shown}"
    )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(obj: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in obj:
        raise SummaryError(f"{source}: field '{_join(where, key)}' is missing")
    return obj[key]


def _required(value: Any, where: str, source: str) -> Any:
    if value is None:
        _fail(source, where, "an object", value)
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: object, where: str, source: str) -> int:
    if not _is_int(value):
        _fail(source, where, "an integer", value)
    assert isinstance(value, int)
    return value


def _str(value: object, where: str, source: str) -> str:
    if not isinstance(value, str):
        _fail(source, where, "a string", value)
    return value


def _optional_str(value: object, where: str, source: str) -> str | None:
    return None if value is None else _str(value, where, source)


def _object(value: object, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(source, where, "an object", value)
    return value


def _optional_object(value: object, where: str, source: str) -> dict[str, Any] | None:
    return None if value is None else _object(value, where, source)


def _metrics(value: object, where: str, source: str) -> dict[str, float | None]:
    obj = _object(value, where, source)
    for k, v in obj.items():
        if v is not None and not _is_number(v):
            _fail(source, f"{where}.{k}", "a number or null", v)
    return obj


def _optional_metrics(value: object, where: str, source: str) -> dict[str, float | None] | None:
    return None if value is None else _metrics(value, where, source)


def _intervals(value: object, where: str, source: str) -> dict[str, Interval] | None:
    if value is None:
        return None
    out: dict[str, Interval] = {}
    for k, pair in _object(value, where, source).items():
        if not (
            isinstance(pair, Sequence)
            and not isinstance(pair, str)
            and len(pair) == 2
            and all(v is None or _is_number(v) for v in pair)
        ):
            _fail(source, f"{where}.{k}", "a [low, high] pair of numbers or nulls", pair)
        out[k] = (pair[0], pair[1])
    return out
