"""The TOML configuration: schema, validation and ``--set`` overrides.

Every table is a frozen dataclass. An unknown key, a wrong type or a value out
of range is a :class:`ConfigError` that names the dotted key and what was
expected, before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flmi.core.errors import ConfigError
from flmi.core.keys import HParam
from flmi.core.messages import HParamValue
from flmi.strategies.registry import STRATEGIES, BuildContext, build_strategy


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where the images come from.

    ``source = "medmnist"`` reads a MedMNIST ``.npz`` from ``path`` (relative
    paths are taken from the config file's folder); ``source = "synthetic"``
    generates hospitals with scanner shift, label skew and unequal sizes;
    ``source = "heart_disease"`` reads the four UCI Heart Disease files from the
    folder ``path`` (Fed-Heart-Disease, one hospital per file, split with
    ``split_seed``; ``val_fraction`` of each training split is held out for
    validation). ``source = "csv"`` reads a table whose ``site_column`` names
    each row's site (a natural split), with ``label_column`` and numeric
    ``feature_columns`` (default: every other column), each site split by
    ``test_fraction`` and ``val_fraction``. ``source = "synthetic_lesions"``
    generates hospitals whose images (``spatial_dims`` 2 or 3) hold zero or
    more lesions, with masks for segmentation, or lesion-present and
    lesion-class labels for (multi-label) classification.
    """

    source: Literal["medmnist", "synthetic", "heart_disease", "csv", "synthetic_lesions"] = (
        "synthetic"
    )
    path: str = ""
    image_size: int = 28
    n_patients: int = 1600
    split_seed: int = 43
    val_fraction: float = 0.0
    test_fraction: float = 0.2
    label_column: str = ""
    site_column: str = ""
    feature_columns: list[str] = field(default_factory=list)
    spatial_dims: int = 2


@dataclass(frozen=True)
class PartitionConfig:
    """``[partition]``: how examples are split into sites.

    ``seed`` fixes the partition (and the generated hospitals) apart from
    training; unset, ``federation.seed`` sets both, so seeds then vary the data
    and the training together.
    """

    method: Literal["iid", "dirichlet", "quantity", "natural"] = "natural"
    num_sites: int = 4
    alpha: float = 0.5
    min_examples_per_site: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class TaskConfig:
    """``[task]``: what is learnt, with which model.

    ``name = "segmentation"`` takes ``model = "unet"`` or ``"segresnet"``
    (``num_classes`` counts the background), trains on patches of
    ``patch_size`` (empty: whole images) and infers with sliding windows that
    overlap by ``sw_overlap``. ``model = "densenet121"`` classifies with MONAI's
    DenseNet121 of ``init_features`` and ``growth_rate``. ``norm`` picks the
    MONAI networks' normalisation (``"auto"``: the network's own; ``"group"``
    or ``"instance"`` for DP-SGD). ``multi_label = true`` predicts
    ``num_classes`` independent labels (binary cross-entropy, per-label AUC).
    """

    name: Literal["classification", "segmentation"] = "classification"
    num_classes: int = 2
    positive_label: int = 1
    model: Literal["small_cnn", "logistic", "densenet121", "unet", "segresnet"] = "small_cnn"
    width: int = 32
    augment: bool = False
    dtype: Literal["float32", "float64"] = "float32"
    norm: Literal["auto", "batch", "instance", "group"] = "auto"
    patch_size: list[int] = field(default_factory=list)
    sw_overlap: float = 0.25
    init_features: int = 64
    growth_rate: int = 32
    multi_label: bool = False


@dataclass(frozen=True)
class StrategyConfig:
    """``[strategy]``: the algorithm by name, plus that algorithm's own keys."""

    name: str = "fedavg"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FederationConfig:
    """``[federation]``: rounds, site sampling, local training and the seed."""

    rounds: int = 10
    fraction: float = 1.0
    min_sites: int = 1
    local_epochs: int = 1
    local_steps: int = 0
    lr: float = 0.01
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_every: int = 1
    seed: int = 0


@dataclass(frozen=True)
class BaselinesConfig:
    """``[baselines]``: arms trained in the same run.

    By default every arm has the federation's training budget and settings.
    A protocol with its own centralised recipe (FLamby trains pooled models
    with Adam for a fixed number of epochs) sets the ``pooled_*`` keys: the
    pooled arm then trains once, continuously, for ``pooled_epochs``.
    """

    pooled: bool = False
    local: bool = False
    pooled_optimizer: Literal["sgd", "adam"] | None = None
    pooled_lr: float | None = None
    pooled_batch_size: int | None = None
    pooled_epochs: int | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: how messages move and where training runs."""

    name: Literal["inprocess"] = "inprocess"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    torch_threads: int = 1


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: what the run directory reports beyond the metrics.

    Every final test metric gets a percentile bootstrap 95 % interval from
    ``bootstrap_resamples`` resamples of the patients (0: none), seeded by
    ``bootstrap_seed``.
    """

    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0


@dataclass(frozen=True)
class SiteConfig:
    """``[sites.NAME]``: one site's own settings (simulation).

    The local-training keys override ``[federation]`` for this site alone
    ("variable local training"); ``group`` names the site's modality or other
    group (FedNorm keeps one normalisation branch per group); the fault keys make a simulated site
    misbehave, to show what robust aggregation and update checks are for.
    """

    local_epochs: int | None = None
    local_steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    group: str = ""
    fault: Literal["none", "label_flip", "noise", "scale", "nan", "inf"] = "none"
    fault_scale: float = 10.0
    fault_noise_std: float = 1.0


@dataclass(frozen=True)
class Config:
    """A whole run's configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sites: dict[str, SiteConfig] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain TOML-ready tables (strategy options inlined, unset keys left out)."""
        out = dataclasses.asdict(self)
        options = out["strategy"].pop("options")
        out["strategy"].update(options)
        for table in ("baselines", "partition"):
            out[table] = {k: v for k, v in out[table].items() if v is not None}
        out["sites"] = {
            name: {k: v for k, v in table.items() if v is not None}
            for name, table in out["sites"].items()
        }
        if not out["sites"]:
            del out["sites"]
        return out


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
            raise ConfigError(
                f"unknown key '{prefix}.{key}'; [{prefix}] takes: {', '.join(sorted(names))}"
            )
        values[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    return cls(**values)


def _build_strategy(table: Any) -> StrategyConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"[strategy] must be a table, got {table!r}")
    name = _coerce("strategy.name", table.get("name", "fedavg"), str)
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ConfigError(
            f"strategy.name: unknown strategy '{name}'; choose one of {sorted(STRATEGIES)}"
        )
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            continue
        if key not in spec.options:
            allowed = ", ".join(sorted(["name", *spec.options]))
            raise ConfigError(
                f"unknown key 'strategy.{key}' for strategy '{name}'; it takes: {allowed}"
            )
        options[key] = _coerce(f"strategy.{key}", value, spec.options[key].type)
    return StrategyConfig(name=name, options=options)


def _build_sites(table: Any) -> dict[str, SiteConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"[sites] must hold one table per site, got {table!r}")
    return {
        name: _build_table(SiteConfig, values, f"sites.{name}") for name, values in table.items()
    }


def check_site_names(config: Config, names: Sequence[str]) -> None:
    """Every ``[sites.NAME]`` table must name a site of the federation."""
    for name in sorted(config.sites):
        if name not in names:
            raise ConfigError(
                f"[sites.{name}]: no site is named '{name}'; "
                f"the sites are {', '.join(sorted(names))}"
            )


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate raw TOML tables into a :class:`Config`."""
    tables: dict[str, Any] = {}
    for name, table in raw.items():
        if name not in _TABLE_TYPES:
            raise ConfigError(
                f"unknown table '[{name}]'; a config takes: "
                + ", ".join(f"[{t}]" for t in _TABLE_TYPES)
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def training_hparams(config: Config) -> dict[str, HParamValue]:
    """The local-training settings every site receives, from ``[federation]``."""
    f = config.federation
    return {
        HParam.LR: f.lr,
        HParam.LOCAL_EPOCHS: f.local_epochs,
        HParam.LOCAL_STEPS: f.local_steps,
        HParam.BATCH_SIZE: f.batch_size,
        HParam.OPTIMIZER: f.optimizer,
        HParam.MOMENTUM: f.momentum,
        HParam.WEIGHT_DECAY: f.weight_decay,
    }


def site_groups(config: Config) -> dict[str, str]:
    """``{site: group}`` for the sites whose ``[sites.NAME]`` table names a group."""
    return {name: s.group for name, s in sorted(config.sites.items()) if s.group}


def check_config(c: Config) -> None:
    """Cross-field checks, each naming the key to change."""
    f, p, t, d = c.federation, c.partition, c.task, c.data
    _require(f.rounds >= 1, f"federation.rounds must be at least 1, got {f.rounds}")
    _require(0.0 < f.fraction <= 1.0, f"federation.fraction must be in (0, 1], got {f.fraction}")
    _require(f.min_sites >= 1, f"federation.min_sites must be at least 1, got {f.min_sites}")
    _require(
        f.min_sites <= p.num_sites,
        f"federation.min_sites = {f.min_sites} exceeds partition.num_sites = {p.num_sites}",
    )
    _require(
        f.local_epochs >= 1, f"federation.local_epochs must be at least 1, got {f.local_epochs}"
    )
    _require(
        f.local_steps >= 0, f"federation.local_steps must not be negative, got {f.local_steps}"
    )
    _require(f.lr > 0, f"federation.lr must be positive, got {f.lr}")
    _require(f.batch_size >= 1, f"federation.batch_size must be at least 1, got {f.batch_size}")
    _require(0.0 <= f.momentum < 1.0, f"federation.momentum must be in [0, 1), got {f.momentum}")
    _require(
        f.weight_decay >= 0, f"federation.weight_decay must not be negative, got {f.weight_decay}"
    )
    _require(f.eval_every >= 1, f"federation.eval_every must be at least 1, got {f.eval_every}")
    _require(p.num_sites >= 1, f"partition.num_sites must be at least 1, got {p.num_sites}")
    _require(p.alpha > 0, f"partition.alpha must be positive, got {p.alpha}")
    _require(
        p.min_examples_per_site >= 1,
        f"partition.min_examples_per_site must be at least 1, got {p.min_examples_per_site}",
    )
    _require(t.num_classes >= 2, f"task.num_classes must be at least 2, got {t.num_classes}")
    _require(
        0 <= t.positive_label < t.num_classes,
        f"task.positive_label = {t.positive_label} is not a class; "
        f"choose one of 0..{t.num_classes - 1}",
    )
    _require(t.width >= 1, f"task.width must be at least 1, got {t.width}")
    check_task_fits(c)
    # Building the strategy range-checks its options and their fit with local training.
    build_strategy(
        name=c.strategy.name,
        hparams=training_hparams(c),
        options=c.strategy.options,
        context=BuildContext(num_sites=p.num_sites, seed=f.seed, site_groups=site_groups(c)),
    )
    spec = STRATEGIES[c.strategy.name]
    needed = spec.min_updates(spec.resolve_options(c.strategy.options))
    _require(
        f.min_sites >= needed,
        f"strategy '{c.strategy.name}' needs at least {needed} updates a round with these "
        f"options; raise federation.min_sites to {needed} if the federation has that many "
        "sites, or change the strategy's options (for krum, lower strategy.num_byzantine)",
    )
    if spec.max_updates is not None:
        _require(
            f.min_sites <= spec.max_updates,
            f"strategy '{c.strategy.name}' receives {spec.max_updates} update(s) a round; "
            f"set federation.min_sites = {spec.max_updates}",
        )
    _require(
        c.report.bootstrap_resamples >= 0,
        f"report.bootstrap_resamples must not be negative, got {c.report.bootstrap_resamples}",
    )
    b = c.baselines
    for key in ("pooled_lr", "pooled_batch_size", "pooled_epochs"):
        value = getattr(b, key)
        _require(value is None or value > 0, f"baselines.{key} must be positive, got {value}")
    for name, site in c.sites.items():
        for key in ("local_epochs", "local_steps", "lr", "batch_size"):
            value = getattr(site, key)
            _require(
                value is None or value > 0 or (key == "local_steps" and value == 0),
                f"sites.{name}.{key} must be positive, got {value}",
            )
        _require(site.fault_scale > 0, f"sites.{name}.fault_scale must be positive")
        _require(site.fault_noise_std > 0, f"sites.{name}.fault_noise_std must be positive")
    _require(
        c.runtime.torch_threads >= 1,
        f"runtime.torch_threads must be at least 1, got {c.runtime.torch_threads}",
    )
    _require(
        0.0 <= d.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {d.val_fraction}"
    )
    _require(
        0.0 < d.test_fraction < 1.0, f"data.test_fraction must be in (0, 1), got {d.test_fraction}"
    )
    if d.source == "csv":
        for key in ("path", "label_column", "site_column"):
            _require(bool(getattr(d, key)), f"data.{key} is required when data.source = 'csv'")
        _require(
            p.method == "natural",
            "a CSV with a site column comes split already: set partition.method = 'natural'",
        )
    elif d.source == "heart_disease":
        _require(bool(d.path), "data.path is required when data.source = 'heart_disease'")
        _require(
            p.method == "natural" and p.num_sites == 4,
            "Fed-Heart-Disease has its own 4 hospitals: set partition.method = 'natural' "
            "and partition.num_sites = 4",
        )
    elif d.source == "medmnist":
        _require(bool(d.path), "data.path is required when data.source = 'medmnist'")
        _require(
            p.method in ("iid", "dirichlet", "quantity"),
            f"partition.method = '{p.method}' does not apply to MedMNIST; "
            "use 'iid', 'dirichlet' or 'quantity'",
        )
    else:
        _require(
            p.method == "natural",
            f"partition.method = '{p.method}': generated hospitals come split already; "
            "use 'natural'",
        )
        _require(
            2 <= p.num_sites <= 16,
            f"partition.num_sites must be 2..16 for synthetic data, got {p.num_sites}",
        )
        _require(d.image_size >= 16, f"data.image_size must be at least 16, got {d.image_size}")
        _require(
            d.n_patients >= 10 * p.num_sites,
            f"data.n_patients = {d.n_patients} is too few for {p.num_sites} hospitals",
        )


SEGMENTATION_MODELS = ("unet", "segresnet")


def check_task_fits(c: Config) -> None:
    """The task, its model and its data must go together; each message names the key."""
    t, d = c.task, c.data
    if t.name == "segmentation":
        _require(
            t.model in SEGMENTATION_MODELS,
            f"task.model = '{t.model}' cannot segment; for task.name = 'segmentation' "
            f"choose one of {list(SEGMENTATION_MODELS)}",
        )
        _require(
            d.source == "synthetic_lesions",
            f"task.name = 'segmentation' needs masks, which data.source = '{d.source}' does "
            "not have; use data.source = 'synthetic_lesions'",
        )
        _require(not t.multi_label, "task.multi_label applies to classification only")
    else:
        _require(
            t.model not in SEGMENTATION_MODELS,
            f"task.model = '{t.model}' is a segmentation network; set task.name = "
            "'segmentation', or choose 'small_cnn' or 'densenet121' to classify",
        )
        _require(
            not t.patch_size,
            "task.patch_size applies to segmentation only; remove it or set "
            "task.name = 'segmentation'",
        )
        if t.multi_label:
            _require(
                d.source == "synthetic_lesions",
                f"task.multi_label needs one label per finding, which data.source = "
                f"'{d.source}' does not have; use data.source = 'synthetic_lesions'",
            )
        elif d.source == "synthetic_lesions":
            _require(
                t.num_classes == 2,
                "data.source = 'synthetic_lesions' labels images lesion present or not: set "
                "task.num_classes = 2, or task.multi_label = true for one label per lesion class",
            )
    _require(
        t.norm == "auto" or t.model in ("densenet121", *SEGMENTATION_MODELS),
        f"task.norm applies to MONAI networks; task.model = '{t.model}' has its own "
        "normalisation: leave task.norm = 'auto'",
    )
    _require(t.init_features >= 1, f"task.init_features must be at least 1, got {t.init_features}")
    _require(t.growth_rate >= 1, f"task.growth_rate must be at least 1, got {t.growth_rate}")
    _require(0.0 <= t.sw_overlap < 1.0, f"task.sw_overlap must be in [0, 1), got {t.sw_overlap}")
    if d.source == "synthetic_lesions":
        _require(
            d.spatial_dims in (2, 3),
            f"data.spatial_dims must be 2 or 3, got {d.spatial_dims}",
        )


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

    A relative ``data.path`` is resolved against the config file's folder, so a
    config runs the same from any working directory.
    """
    raw = apply_overrides(read_toml(path), overrides or [])
    config = config_from_dict(raw)
    if config.data.path and not Path(config.data.path).is_absolute():
        resolved = str((path.parent / config.data.path).resolve())
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=resolved))
    return config
