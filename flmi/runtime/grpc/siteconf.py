"""``SITE.toml``: a hospital's own settings and the bounds it runs within.

Example::

    [data]
    # The consortium's config: task, model and training plan.
    federation_config = "fed.toml"
    # This hospital's own files, with the keys of a federation config's [data]
    # (sources "manifest", "medmnist" or "csv"; [data.transforms] too). Without
    # `source`, the client builds the federation's partition and keeps this
    # site's split: a simulation convenience.
    source = "manifest"
    path = "/data/studies/manifest.csv"
    label_column = "label"

    [site]
    state_dir = "state/hospital_1"   # SiteState, saved atomically each round
    device = "cpu"                   # default: the federation config's runtime.device

    [bounds]
    strategies = ["fedavg", "fedprox"]   # empty or absent: any
    aggregation = ["secagg", "he"]       # how the update may leave; empty or absent: any
    max_rounds = 100
    max_local_epochs = 5
    max_local_steps = 0                  # 0: no bound

    [bounds.hparams]                     # per hyperparameter: allowed values, or min / max
    optimizer = ["sgd", "adam"]
    lr = { max = 0.1 }

Relative paths are taken from the folder of ``SITE.toml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmi.config import DataConfig, read_toml
from flmi.core.errors import ConfigError
from flmi.core.messages import HParamValue
from flmi.data.source_registry import SOURCES
from flmi.runtime.grpc.codes import WireError

DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataConfig))
TABLES = {
    "data": ("federation_config", *DATA_KEYS),
    "site": ("state_dir", "device", "torch_threads", "reconnect_timeout_s", "audit_log"),
    "bounds": (
        "strategies",
        "max_rounds",
        "max_local_epochs",
        "max_local_steps",
        "hparams",
        "aggregation",
    ),
}


@dataclass(frozen=True)
class HParamBound:
    """What one hyperparameter may be: one of ``allowed``, or within ``[low, high]``."""

    allowed: tuple[HParamValue, ...] = ()
    low: float | None = None
    high: float | None = None

    def refuse(self, name: str, value: HParamValue) -> str | None:
        """Why ``value`` is out of bounds, or ``None`` if it is within them."""
        if self.allowed and value not in self.allowed:
            return f"{name} = {value!r} is not one of {list(self.allowed)}"
        if self.low is not None or self.high is not None:
            if isinstance(value, str) or not math.isfinite(float(value)):
                return f"{name} = {value!r} is not a number"
            if self.low is not None and float(value) < self.low:
                return f"{name} = {value!r} is below this site's minimum {self.low:g}"
            if self.high is not None and float(value) > self.high:
                return f"{name} = {value!r} exceeds this site's maximum {self.high:g}"
        return None


@dataclass(frozen=True)
class Bounds:
    """``[bounds]``: what this site agrees to run."""

    strategies: tuple[str, ...] = ()
    max_rounds: int | None = None
    max_local_epochs: int | None = None
    max_local_steps: int | None = None
    hparams: Mapping[str, HParamBound] = field(default_factory=dict)
    aggregation: tuple[str, ...] = ()

    def check_aggregation(self, aggregation: str) -> tuple[WireError, str] | None:
        """The code and reason this site refuses to send its update as ``aggregation``."""
        if self.aggregation and aggregation not in self.aggregation:
            return (
                WireError.AGGREGATION_REFUSED,
                f"privacy.aggregation = '{aggregation}' is not one this site allows "
                f"({', '.join(self.aggregation)})",
            )
        return None

    def check_plan(
        self, *, strategy: str, rounds: int, hparams: Mapping[str, HParamValue]
    ) -> tuple[WireError, str] | None:
        """The code and reason this site refuses a plan, or ``None`` to accept it."""
        if self.strategies and strategy not in self.strategies:
            return (
                WireError.STRATEGY_REFUSED,
                f"strategy '{strategy}' is not one this site allows ({', '.join(self.strategies)})",
            )
        if self.max_rounds is not None and rounds > self.max_rounds:
            return (
                WireError.ROUNDS_REFUSED,
                f"{rounds} rounds exceed this site's bound of {self.max_rounds}",
            )
        return self.check_hparams(hparams)

    def check_hparams(self, hparams: Mapping[str, HParamValue]) -> tuple[WireError, str] | None:
        """The code and reason this site refuses these hyperparameters, or ``None``."""
        limits = {"local_epochs": self.max_local_epochs, "local_steps": self.max_local_steps}
        for name, limit in limits.items():
            value = hparams.get(name)
            if limit and isinstance(value, int) and value > limit:
                return (
                    WireError.HPARAM_REFUSED,
                    f"{name} = {value} exceeds this site's bound of {limit}",
                )
        for name in sorted(self.hparams):
            if name in hparams:
                reason = self.hparams[name].refuse(name, hparams[name])
                if reason is not None:
                    return WireError.HPARAM_REFUSED, reason
        return None


@dataclass(frozen=True)
class SiteSettings:
    """A whole ``SITE.toml``.

    ``data`` is this hospital's own ``[data]`` table (paths made absolute); empty:
    the site takes its split of the federation config's partition.
    """

    federation_config: Path
    state_dir: Path
    audit_log: Path
    device: str | None
    torch_threads: int | None
    reconnect_timeout_s: float
    bounds: Bounds
    data: Mapping[str, Any] = field(default_factory=dict)


def _check_keys(raw: Mapping[str, Any], path: Path) -> None:
    for table, values in raw.items():
        if table not in TABLES:
            raise ConfigError(f"{path}: unknown table [{table}]; it takes [data], [site], [bounds]")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        for key in values:
            if key not in TABLES[table]:
                raise ConfigError(
                    f"{path}: unknown key '{table}.{key}'; [{table}] takes "
                    + ", ".join(TABLES[table])
                )


def _bound(name: str, value: Any, path: Path) -> HParamBound:
    if isinstance(value, list):
        return HParamBound(allowed=tuple(value))
    if isinstance(value, dict) and set(value) <= {"min", "max"} and value:
        numbers = [v for v in value.values() if isinstance(v, int | float)]
        if len(numbers) != len(value):
            raise ConfigError(f"{path}: bounds.hparams.{name}: min and max must be numbers")
        low, high = value.get("min"), value.get("max")
        return HParamBound(
            low=None if low is None else float(low), high=None if high is None else float(high)
        )
    raise ConfigError(
        f"{path}: bounds.hparams.{name} must be a list of allowed values or a table with "
        "min and/or max"
    )


def _own_data(
    data: Mapping[str, Any], path: Path, resolve: Callable[[str], Path]
) -> dict[str, Any]:
    """This hospital's own ``[data]`` keys, its file paths checked and made absolute."""
    own = {k: v for k, v in data.items() if k != "federation_config"}
    if not own:
        return {}
    source = own.get("source")
    site_sources = [name for name in SOURCES.names() if SOURCES[name].at_site]
    if source not in site_sources:
        raise ConfigError(
            f"{path}: data.source = {source!r}: a hospital's own data is one of "
            f"{', '.join(repr(s) for s in site_sources)}; or leave [data] to "
            "federation_config alone to take this site's split of the federation's data"
        )
    for key in ("path", "cache_dir"):
        value = own.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: data.{key} must be a file path")
        resolved = resolve(str(Path(value).expanduser()))
        if key == "path" and not resolved.exists():
            raise ConfigError(
                f"{path}: data.path = '{value}': no such file ({resolved}); point it at "
                "this hospital's manifest CSV, .npz or table (relative paths start at "
                "the folder of this file)"
            )
        own[key] = str(resolved)
    if "path" not in own and source != "medmnist":
        raise ConfigError(f"{path}: data.path is required: this hospital's {source} file")
    return own


def load_site_settings(path: Path, *, site: str) -> SiteSettings:
    """Read and check ``SITE.toml``."""
    raw = read_toml(path)
    _check_keys(raw, path)
    base = path.resolve().parent
    data, own, bounds = raw.get("data", {}), raw.get("site", {}), raw.get("bounds", {})
    if "federation_config" not in data:
        raise ConfigError(
            f"{path}: data.federation_config is required (the config whose partition this "
            "site's data is taken from)"
        )

    def resolve(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    def optional_int(table: Mapping[str, Any], key: str, where: str) -> int | None:
        value = table.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ConfigError(f"{path}: {where}.{key} must be a non-negative integer")
        return value

    state_dir = resolve(str(own.get("state_dir", f"flmi-site-{site}")))
    own_data = _own_data(data, path, resolve)
    strategies = bounds.get("strategies", [])
    if not isinstance(strategies, list) or not all(isinstance(s, str) for s in strategies):
        raise ConfigError(f"{path}: bounds.strategies must be a list of strategy names")
    aggregation = bounds.get("aggregation", [])
    if not isinstance(aggregation, list) or not set(aggregation) <= {"plain", "secagg", "he"}:
        raise ConfigError(
            f'{path}: bounds.aggregation must be a list of "plain", "secagg" and "he"'
        )
    timeout = own.get("reconnect_timeout_s", 300.0)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{path}: site.reconnect_timeout_s must be a positive number")
    return SiteSettings(
        federation_config=resolve(str(data["federation_config"])),
        state_dir=state_dir,
        audit_log=resolve(str(own["audit_log"]))
        if "audit_log" in own
        else state_dir / "audit.jsonl",
        device=own.get("device"),
        torch_threads=optional_int(own, "torch_threads", "site"),
        reconnect_timeout_s=float(timeout),
        data=own_data,
        bounds=Bounds(
            strategies=tuple(strategies),
            max_rounds=optional_int(bounds, "max_rounds", "bounds"),
            max_local_epochs=optional_int(bounds, "max_local_epochs", "bounds"),
            max_local_steps=optional_int(bounds, "max_local_steps", "bounds"),
            hparams={k: _bound(k, v, path) for k, v in bounds.get("hparams", {}).items()},
            aggregation=tuple(aggregation),
        ),
    )
