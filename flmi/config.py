"""The TOML configuration: schema, validation and ``--set`` overrides.

Every table is a frozen dataclass. An unknown key, a wrong type or a value out
of range is a :class:`ConfigError` that names the dotted key and what was
expected, before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import math
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
from flmi.data.download import medmnist_file
from flmi.data.source_registry import SOURCES, source_for
from flmi.privacy.clip import update_noise_multiplier
from flmi.privacy.compat import (
    SAMPLE_DP_REFUSED,
    SERVER_NOISE_REFUSAL,
    client_dp_refusal,
    secagg_noise_room,
)
from flmi.privacy.linear import linear_rule
from flmi.runtime.registry import RUNTIMES
from flmi.strategies.registry import STRATEGIES, BuildContext, build_strategy
from flmi.tasks.model_registry import MODELS
from flmi.tasks.registry import TASKS


@dataclass(frozen=True)
class TransformsConfig:
    """``[data.transforms]``: what every image of a manifest goes through, in this order.

    Read (DICOM rescale slope and intercept applied: CT in Hounsfield units),
    channels first, then ``orientation`` (axis codes such as ``"RAS"``; 3D
    only), ``spacing`` (target voxel size in mm, one value per spatial axis),
    ``channels`` (0: keep; 1: average to one channel; 3: repeat a grey channel),
    ``intensity`` (``"minmax"`` to ``[0, 1]`` per image, ``"zscore"`` per
    image, ``"window"``: CT window ``window_center`` / ``window_width``
    mapped to ``[0, 1]`` and clipped, ``"none"``), and ``spatial_size``
    (resize; 2 values for images, 3 for volumes; a 2D image in a 3D pipeline
    becomes a one-slice volume). Masks go through the same spatial steps,
    with nearest-neighbour interpolation and no intensity step.
    """

    spatial_size: list[int] = field(default_factory=list)
    spacing: list[float] = field(default_factory=list)
    orientation: str = ""
    channels: int = 0
    intensity: Literal["minmax", "zscore", "window", "none"] = "minmax"
    window_center: float = 40.0
    window_width: float = 400.0


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
    ``test_fraction`` and ``val_fraction``.

    ``source = "manifest"`` reads a CSV of image paths (``image_column``;
    PNG, JPEG, DICOM files, DICOM series folders, NIfTI; relative to the CSV)
    with a ``label_column`` (or a ``mask_column`` of mask paths), and an
    optional ``site_column`` (the natural split) or ``split_column``
    (``train``/``val``/``test`` per row). Every image goes through
    ``[data.transforms]``. A file that cannot be read stops the run
    (``on_unreadable = "error"``) or is left out and counted
    (``on_unreadable = "skip"``). An empty label cell is an error
    (``empty_labels = "error"``) or marks an unlabeled training image of its
    site (``empty_labels = "unlabeled"``: a partly or wholly unannotated
    hospital, for ``federation.semi_supervised``; a site with no label at
    all is scored nowhere).

    MedMNIST by name: ``source = "medmnist"`` with ``name`` (e.g.
    ``"breastmnist"``) and no ``path`` reads ``cache_dir/NAME.npz``; with
    ``allow_download`` the official file is downloaded there first (from
    ``download_url`` when set: a mirror) and its MD5 checked.

    With ``[task] name = "regression"`` the CSV label column holds numbers.
    ``source = "synthetic_age"`` generates hospitals for age regression (same
    scanners, plus age shift); ``source = "tcga_brca"`` reads FLamby's
    Fed-TCGA-BRCA files from the folder ``path`` (6 regions, FLamby's split).
    ``source = "synthetic_lesions"`` generates hospitals whose images
    (``spatial_dims`` 2 or 3) hold zero or more lesions, with masks for
    segmentation, or lesion-present and lesion-class labels for (multi-label)
    classification.

    ``source`` is any name of :data:`flmi.data.source_registry.SOURCES` (a
    plug-in package may add sources); each checks its own keys.
    """

    source: str = "synthetic"
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
    name: str = ""
    allow_download: bool = False
    cache_dir: str = ""
    download_url: str = ""
    image_column: str = "image"
    mask_column: str = ""
    split_column: str = ""
    on_unreadable: Literal["error", "skip"] = "error"
    empty_labels: Literal["error", "unlabeled"] = "error"
    transforms: TransformsConfig = field(default_factory=TransformsConfig)


@dataclass(frozen=True)
class PartitionConfig:
    """``[partition]``: how examples are split into sites.

    ``seed`` fixes the partition (and the generated hospitals) apart from
    training; unset, ``federation.seed`` sets both, so seeds then vary the data
    and the training together.

    ``scanner_shift = true`` gives each site of a real 2D image collection
    (MedMNIST, a manifest) a scanner of its own, drawn from ``seed`` over the
    generated hospitals' ranges (blur, bias field, contrast curve, scale,
    offset, noise), applied to all its splits; the central test set becomes
    the sites' test images as their scanners made them
    (:mod:`flmi.data.scanner_shift`).
    """

    method: Literal["iid", "dirichlet", "quantity", "natural"] = "natural"
    num_sites: int = 4
    alpha: float = 0.5
    min_examples_per_site: int = 1
    seed: int | None = None
    scanner_shift: bool = False


@dataclass(frozen=True)
class TaskConfig:
    """``[task]``: what is learnt, with which model.

    Transfer learning: ``init_weights`` (a local ``.safetensors`` file, such
    as a previous run's ``model.safetensors``; relative to the config file)
    starts every arm from those weights instead of a random initialisation;
    tensors under the ``init_skip`` name prefixes keep their fresh
    initialisation (a new head for another class count, say). ``freeze``
    name prefixes are not trained: their updates are zero.

    ``name`` is one of :data:`flmi.tasks.registry.TASKS`. Regression reads
    ``loss`` and predicts ``target_offset + target_scale * output``.

    ``in_channels`` and ``spatial_dims`` (0 for tabular features, 2 for
    images, 3 for volumes) shape the model. ``flmi run`` reads them from the
    data and checks them when set; ``flmi server`` holds no data and needs them,
    except for generated hospitals (1 channel, 2D).

    ``name = "segmentation"`` takes ``model = "unet"`` or ``"segresnet"``
    (``num_classes`` counts the background), trains on patches of
    ``patch_size`` (empty: whole images) and infers with sliding windows that
    overlap by ``sw_overlap``. ``model = "densenet121"`` classifies with MONAI's
    DenseNet121 of ``init_features`` and ``growth_rate``. ``norm`` picks the
    MONAI networks' normalisation (``"auto"``: the network's own; ``"group"``
    or ``"instance"`` for DP-SGD). ``multi_label = true`` predicts
    ``num_classes`` independent labels (binary cross-entropy, per-label AUC).
    """

    name: str = "classification"
    num_classes: int = 2
    positive_label: int = 1
    model: str = "small_cnn"  # any network of flmi.tasks.model_registry.MODELS
    width: int = 32
    augment: bool = False
    dtype: Literal["float32", "float64"] = "float32"
    loss: Literal["mse", "l1"] = "mse"
    target_offset: float = 0.0
    target_scale: float = 1.0
    in_channels: int | None = None
    spatial_dims: int | None = None
    norm: Literal["auto", "batch", "instance", "group"] = "auto"
    patch_size: list[int] = field(default_factory=list)
    sw_overlap: float = 0.25
    init_features: int = 64
    growth_rate: int = 32
    multi_label: bool = False
    init_weights: str = ""
    init_skip: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StrategyConfig:
    """``[strategy]``: the algorithm by name, plus that algorithm's own keys."""

    name: str = "fedavg"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FederationConfig:
    """``[federation]``: rounds, site sampling, local training and the seed.

    ``semi_supervised`` (``"none"``, ``"fixmatch"``, ``"pseudo_label"``) is
    how sites with unlabeled training images (``[sites.NAME] labeled =
    false`` or ``labeled_fraction``) learn from them: a prediction at least
    ``pseudo_label_threshold`` confident becomes the target, and the
    unlabeled loss counts ``unlabeled_loss_weight`` times the supervised one.
    In aggregation (``unlabeled_aggregation = "mean"``) an unlabeled image a
    site trained on counts ``unlabeled_weight`` of a labeled one (1: the same);
    with ``"add"`` the sites that trained on labels are aggregated among
    themselves and the unlabeled sites' mean change is added, scaled by
    ``unlabeled_weight`` (see :mod:`flmi.strategies.unlabeled_added`).
    ``pseudo_label_teacher`` picks the model that predicts the pseudo-labels:
    ``"local"``, the model being trained (FixMatch), or ``"global"``, a frozen
    copy of the global model the site received that round.
    ``distribution_alignment = true`` divides the teacher's class
    probabilities by their mean over the site's unlabeled images before
    thresholding, against pseudo-labels drawn mostly from the majority class.
    ``soft_pseudo_labels = true`` trains toward the teacher's whole class
    distribution (cross-entropy with soft targets) instead of its top class.
    ``pseudo_label_selection = "class_quota"`` replaces the threshold: once a
    round each site gives a pseudo-label to the ``pseudo_label_quota`` share
    of its unlabeled images, split between the classes as the teacher's mean
    prediction splits them, each class taking its most confident images (a
    class-wise selection after FlexMatch, Zhang et al., NeurIPS 2021).
    With ``"none"``, a site without any labeled training example sits out.
    ``max_failed_rounds`` stops the run, with an error naming each site's
    reason, at the round that makes this many rounds aggregate nothing (fewer
    valid updates than ``min_sites``); 1 stops at the first.
    """

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
    semi_supervised: Literal["none", "fixmatch", "pseudo_label"] = "none"
    pseudo_label_threshold: float = 0.95
    unlabeled_loss_weight: float = 1.0
    unlabeled_weight: float = 1.0
    unlabeled_aggregation: Literal["mean", "add"] = "mean"
    pseudo_label_teacher: Literal["local", "global"] = "local"
    distribution_alignment: bool = False
    soft_pseudo_labels: bool = False
    pseudo_label_selection: Literal["threshold", "class_quota"] = "threshold"
    pseudo_label_quota: float = 0.5
    max_failed_rounds: int = 1


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
    """``[runtime]``: how messages move and where training runs.

    ``tensorboard`` and ``mlflow`` also log every round's metrics to
    ``RUN_DIR/tensorboard/`` and to an MLflow file store in ``RUN_DIR/mlruns/``
    (the ``trackers`` extra).
    """

    name: str = "inprocess"  # any runtime of flmi.runtime.registry.RUNTIMES
    device: Literal["cpu", "cuda", "auto"] = "auto"
    torch_threads: int = 1
    tensorboard: bool = False
    mlflow: bool = False


@dataclass(frozen=True)
class DeployConfig:
    """``[deploy]``: a real federation over gRPC with mutual TLS (``flmi server``).

    ``sites`` is the allow-list: the certificate names that may connect.
    ``revocation_list`` names a file of revoked site names or certificate
    serial numbers (hex), one per line, re-read on every change (relative to
    the config file's folder). Each round has one deadline,
    ``round_timeout_s``; a site silent for three ``heartbeat_s`` is left out
    of the round at once. The server starts when every site has registered,
    or after ``wait_for_sites_s`` with at least ``federation.min_sites``.
    Tensors stream in frames of ``chunk_bytes``; no gRPC message may exceed
    ``max_message_bytes``, nor an update's payload ``max_payload_bytes``.
    """

    sites: list[str] = field(default_factory=list)
    revocation_list: str = ""
    round_timeout_s: float = 600.0
    wait_for_sites_s: float = 600.0
    heartbeat_s: float = 5.0
    chunk_bytes: int = 1 << 20
    max_message_bytes: int = 4 << 20
    max_payload_bytes: int = 1 << 32


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: what the run directory reports beyond the metrics.

    Every final test metric gets a percentile bootstrap 95 % interval from
    ``bootstrap_resamples`` resamples of the patients (0: none), seeded by
    ``bootstrap_seed``. ROC curves, confusion matrices and calibration come
    from each site's counts of positives and negatives in ``histogram_bins``
    equal bins of the predicted probability (no patient's score leaves a
    site; adjacent bins are merged at the site until no cell holds 1 to
    ``min_count - 1`` patients). The operating threshold is chosen on the
    sites' validation splits only: Youden's J, or the highest threshold that
    reaches ``target_sensitivity`` when it is set.
    ``bootstrap_seed``.

    Before training each site describes its data (counts, label or target
    distribution, intensity histogram, image size); a count below
    ``min_count`` is suppressed at the site. A site whose distributions lie
    farther than ``flag_distance`` (0..1, see :mod:`flmi.report.heterogeneity`) from the
    other sites' is flagged in ``summary.json``'s ``data`` section. Survival
    runs write Kaplan-Meier curves; ``km_bin_width`` > 0 rounds times up to
    bins of that width at each site (0: exact times).
    """

    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    histogram_bins: int = 100
    target_sensitivity: float | None = None
    min_count: int = 5
    flag_distance: float = 0.25
    km_bin_width: float = 0.0


@dataclass(frozen=True)
class PrivacyConfig:
    """``[privacy]``: differential privacy, and what protects updates on their way to the server.

    ``dp = "sample"`` trains every site with DP-SGD (Opacus: per-example
    gradients clipped to ``max_grad_norm``, Gaussian noise of std
    ``noise_multiplier * max_grad_norm``, Poisson sampling); each site spends
    its own epsilon at ``delta``. With ``target_epsilon`` set, each site's noise
    multiplier is the one Opacus computes to reach it after every round.
    ``dp = "client"`` is DP-FedAvg: each site's update is clipped to
    ``clip_norm`` (or a clip that adapts toward the ``adaptive_clip_quantile``
    of the update norms) and Gaussian noise of std ``noise_multiplier * clip``
    is added to their sum, at the server (``noise_at = "server"``, a trusted
    server) or split over the sites (``noise_at = "site"``). ``accountant``
    is Opacus's ``"rdp"`` or ``"prv"`` accountant.

    ``aggregation`` is ``"plain"`` (the server sees each site's update),
    ``"secagg"`` (secure aggregation: the server sees only the sum of masked,
    fixed-point updates, recovered when up to ``n - secagg_threshold`` sites
    drop out) or ``"he"`` (CKKS homomorphic encryption: the server adds
    ciphertexts under a public context; ``he_key_holder`` makes the keys and
    alone holds the secret key, and decrypts only a sum that at least
    ``he_min_contributions`` sites of the round signed; 0: a strict majority
    of the sites sampled each round, at least 2).
    Only strategies linear in the updates may run under ``"secagg"`` or
    ``"he"`` (see :mod:`flmi.privacy.linear`). DP combines with them where
    the mechanism needs only the sum: ``dp = "sample"``, and ``dp = "client"``
    with ``noise_at = "site"`` (then ``secagg_clip`` must hold each site's
    noised change); ``noise_at = "server"`` needs each site's own update.

    All DP noise is OS randomness nobody can regenerate
    (:mod:`flmi.privacy.noise_source`). ``insecure_reproducible_noise = true``
    derives it from ``federation.seed`` instead, so DP runs repeat exactly:
    for tests only, with no privacy guarantee (anyone with the config removes
    the noise); ``flmi server`` and ``flmi client`` refuse it.
    """

    dp: Literal["none", "sample", "client"] = "none"
    delta: float = 1e-5
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    target_epsilon: float | None = None
    accountant: Literal["rdp", "prv"] = "rdp"
    clip_norm: float = 1.0
    adaptive_clip: bool = False
    adaptive_clip_quantile: float = 0.5
    adaptive_clip_lr: float = 0.2
    adaptive_clip_count_noise: float = 1.0
    noise_at: Literal["server", "site"] = "server"
    aggregation: Literal["plain", "secagg", "he"] = "plain"
    secagg_threshold: int = 0
    secagg_clip: float = 1.0
    secagg_bits: int = 32
    he_key_holder: str = ""
    he_min_contributions: int = 0
    he_poly_modulus_degree: int = 8192
    he_scale_bits: int = 40
    insecure_reproducible_noise: bool = False


@dataclass(frozen=True)
class SiteConfig:
    """``[sites.NAME]``: one site's own settings (simulation).

    The local-training keys override ``[federation]`` for this site alone
    ("variable local training"); ``group`` names the site's modality or other
    group (FedNorm keeps one normalisation branch per group); the fault keys make a simulated site
    misbehave, to show what robust aggregation and update checks are for.
    ``labeled = false`` hides every training label of the site (a hospital
    whose images were never annotated), ``labeled_fraction`` all but that
    share of them; see ``federation.semi_supervised``. ``train_fraction``
    keeps only that share of the site's training examples and drops the rest
    (a smaller hospital, for studies where labels are scarce).
    """

    local_epochs: int | None = None
    local_steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    group: str = ""
    fault: Literal["none", "label_flip", "noise", "scale", "nan", "inf"] = "none"
    fault_scale: float = 10.0
    fault_noise_std: float = 1.0
    labeled: bool = True
    labeled_fraction: float = 1.0
    train_fraction: float = 1.0


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
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    sites: dict[str, SiteConfig] = field(default_factory=dict)
    deploy: DeployConfig = field(default_factory=DeployConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain TOML-ready tables (strategy options inlined, unset keys left out)."""
        out = dataclasses.asdict(self)
        options = out["strategy"].pop("options")
        out["strategy"].update(options)
        for table in ("baselines", "partition", "report", "privacy", "task"):
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
            raise ConfigError(
                f"unknown key '{prefix}.{key}'; [{prefix}] takes: {', '.join(sorted(names))}"
            )
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
    """The local-training settings every site receives, from ``[federation]``.

    Semi-supervised settings and ``[task] freeze`` are sent only when set.
    """
    f = config.federation
    out: dict[str, HParamValue] = {
        HParam.LR: f.lr,
        HParam.LOCAL_EPOCHS: f.local_epochs,
        HParam.LOCAL_STEPS: f.local_steps,
        HParam.BATCH_SIZE: f.batch_size,
        HParam.OPTIMIZER: f.optimizer,
        HParam.MOMENTUM: f.momentum,
        HParam.WEIGHT_DECAY: f.weight_decay,
    }
    if f.semi_supervised != "none":
        out[HParam.SEMI_SUPERVISED] = f.semi_supervised
        out[HParam.PSEUDO_LABEL_THRESHOLD] = f.pseudo_label_threshold
        out[HParam.UNLABELED_LOSS_WEIGHT] = f.unlabeled_loss_weight
        if f.pseudo_label_teacher != "local":
            out[HParam.PSEUDO_LABEL_TEACHER] = f.pseudo_label_teacher
        if f.distribution_alignment:
            out[HParam.DISTRIBUTION_ALIGNMENT] = 1
        if f.soft_pseudo_labels:
            out[HParam.SOFT_PSEUDO_LABELS] = 1
        if f.pseudo_label_selection != "threshold":
            out[HParam.PSEUDO_LABEL_SELECTION] = f.pseudo_label_selection
            out[HParam.PSEUDO_LABEL_QUOTA] = f.pseudo_label_quota
    if config.task.freeze:
        out[HParam.FREEZE] = ",".join(config.task.freeze)
    return out


def labeled_fractions(config: Config) -> dict[str, float]:
    """``{site: share of training labels kept}`` for the sites that hide some (simulation)."""
    out: dict[str, float] = {}
    for name, site in sorted(config.sites.items()):
        fraction = 0.0 if not site.labeled else site.labeled_fraction
        if fraction < 1.0:
            out[name] = fraction
    return out


def partition_seed(config: Config) -> int:
    """The seed of the partition, generated hospitals and scanners.

    ``partition.seed`` when set, else ``federation.seed``.
    """
    p = config.partition
    return p.seed if p.seed is not None else config.federation.seed


def train_fractions(config: Config) -> dict[str, float]:
    """``{site: share of training examples kept}`` for the sites cut smaller (simulation)."""
    return {
        name: site.train_fraction
        for name, site in sorted(config.sites.items())
        if site.train_fraction < 1.0
    }


def site_groups(config: Config) -> dict[str, str]:
    """``{site: group}`` for the sites whose ``[sites.NAME]`` table names a group."""
    return {name: s.group for name, s in sorted(config.sites.items()) if s.group}


def _check_deploy(e: DeployConfig) -> None:
    _require(len(set(e.sites)) == len(e.sites), "deploy.sites names a site twice; list each once")
    for key in ("round_timeout_s", "wait_for_sites_s", "heartbeat_s"):
        value = getattr(e, key)
        _require(value > 0, f"deploy.{key} must be positive, got {value}")
    _require(
        e.chunk_bytes >= 1024, f"deploy.chunk_bytes must be at least 1024, got {e.chunk_bytes}"
    )
    _require(
        e.max_message_bytes >= e.chunk_bytes + 65536,
        f"deploy.max_message_bytes = {e.max_message_bytes} must exceed deploy.chunk_bytes = "
        f"{e.chunk_bytes} by at least 65536 (room for a frame's header)",
    )
    _require(
        e.max_payload_bytes >= 1,
        f"deploy.max_payload_bytes must be positive, got {e.max_payload_bytes}",
    )


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
    _require(
        f.max_failed_rounds >= 1,
        f"federation.max_failed_rounds must be at least 1, got {f.max_failed_rounds}",
    )
    _require(p.num_sites >= 1, f"partition.num_sites must be at least 1, got {p.num_sites}")
    _require(p.alpha > 0, f"partition.alpha must be positive, got {p.alpha}")
    _require(
        p.min_examples_per_site >= 1,
        f"partition.min_examples_per_site must be at least 1, got {p.min_examples_per_site}",
    )
    _require(t.num_classes >= 2, f"task.num_classes must be at least 2, got {t.num_classes}")
    _require(
        t.in_channels is None or t.in_channels >= 1,
        f"task.in_channels must be at least 1, got {t.in_channels}",
    )
    _require(
        t.spatial_dims in (None, 0, 2, 3),
        f"task.spatial_dims must be 0 (tabular), 2 or 3, got {t.spatial_dims}",
    )
    _check_deploy(c.deploy)
    _require(
        0 <= t.positive_label < t.num_classes,
        f"task.positive_label = {t.positive_label} is not a class; "
        f"choose one of 0..{t.num_classes - 1}",
    )
    _require(t.width >= 1, f"task.width must be at least 1, got {t.width}")
    check_task_fits(c)
    _check_task(c)
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
    check_privacy(c)
    _require(
        0.0 <= f.pseudo_label_threshold <= 1.0,
        f"federation.pseudo_label_threshold must be in [0, 1], got {f.pseudo_label_threshold}",
    )
    _require(
        0.0 < f.pseudo_label_quota <= 1.0,
        f"federation.pseudo_label_quota must be in (0, 1] (the share of a site's unlabeled "
        f"images that get a pseudo-label each round), got {f.pseudo_label_quota}",
    )
    _require(
        f.unlabeled_loss_weight >= 0,
        f"federation.unlabeled_loss_weight must not be negative, got {f.unlabeled_loss_weight}",
    )
    _require(
        0.0 < f.unlabeled_weight <= 1.0,
        f"federation.unlabeled_weight must be in (0, 1], got {f.unlabeled_weight}",
    )
    for key in ("freeze", "init_skip"):
        for prefix in getattr(t, key):
            _require(
                bool(prefix.strip()) and "," not in prefix,
                f"task.{key}: {prefix!r} is not a tensor name prefix; give module paths such "
                "as 'features.0' or 'head'",
            )
    _require(
        not t.init_skip or bool(t.init_weights),
        "task.init_skip names tensors to leave out of task.init_weights, which is not set",
    )
    _require(
        not t.init_weights or t.init_weights.endswith(".safetensors"),
        f"task.init_weights = '{t.init_weights}': only .safetensors files are read "
        "(nothing pickled is ever loaded); convert the weights to safetensors",
    )
    _require(
        c.report.bootstrap_resamples >= 0,
        f"report.bootstrap_resamples must not be negative, got {c.report.bootstrap_resamples}",
    )
    _require(
        2 <= c.report.histogram_bins <= 10000,
        f"report.histogram_bins must be in 2..10000, got {c.report.histogram_bins}",
    )
    ts = c.report.target_sensitivity
    _require(
        ts is None or 0.0 < ts <= 1.0,
        f"report.target_sensitivity must be in (0, 1], got {ts}",
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
        _require(
            0.0 <= site.labeled_fraction <= 1.0,
            f"sites.{name}.labeled_fraction must be in [0, 1], got {site.labeled_fraction}",
        )
        _require(
            site.labeled or site.labeled_fraction == 1.0,
            f"sites.{name}: labeled = false hides every label; leave labeled_fraction out, "
            "or set labeled = true to keep that share of the labels",
        )
        _require(
            0.0 < site.train_fraction <= 1.0,
            f"sites.{name}.train_fraction must be in (0, 1], got {site.train_fraction}",
        )
        _require(site.fault_noise_std > 0, f"sites.{name}.fault_noise_std must be positive")
    _require(
        c.runtime.torch_threads >= 1,
        f"runtime.torch_threads must be at least 1, got {c.runtime.torch_threads}",
    )
    RUNTIMES.lookup(c.runtime.name)
    check_dp(c)
    _require(
        0.0 <= d.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {d.val_fraction}"
    )
    _require(
        0.0 < d.test_fraction < 1.0, f"data.test_fraction must be in (0, 1), got {d.test_fraction}"
    )
    _require(
        not d.name or d.source == "medmnist",
        f"data.name = '{d.name}' names a MedMNIST data set: set data.source = 'medmnist' "
        "or leave data.name out",
    )
    if d.name:
        medmnist_file(d.name)  # an unknown name is an error now, not after start-up
    source_for(d.source).check(c)


def check_task_fits(c: Config) -> None:
    """The task, its model and its data must go together; each message names the key."""
    t, d = c.task, c.data
    network = MODELS.lookup(t.model)
    segmenting = [name for name in MODELS.names() if MODELS[name].serves("segmentation")]
    if t.name == "segmentation":
        _require(
            network.serves("segmentation"),
            f"task.model = '{t.model}' cannot segment; for task.name = 'segmentation' "
            f"choose one of {segmenting}",
        )
        _require(
            d.source == "synthetic_lesions",
            f"task.name = 'segmentation' needs masks, which data.source = '{d.source}' does "
            "not have; use data.source = 'synthetic_lesions'",
        )
        _require(not t.multi_label, "task.multi_label applies to classification only")
    else:
        _require(
            network.serves(t.name) or not network.serves("segmentation"),
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
        t.norm == "auto" or network.takes_norm,
        f"task.norm applies to MONAI networks; task.model = '{t.model}' has its own "
        "normalisation: leave task.norm = 'auto'",
    )
    _require(t.init_features >= 1, f"task.init_features must be at least 1, got {t.init_features}")
    _require(t.growth_rate >= 1, f"task.growth_rate must be at least 1, got {t.growth_rate}")
    _require(0.0 <= t.sw_overlap < 1.0, f"task.sw_overlap must be in [0, 1), got {t.sw_overlap}")


def check_privacy(c: Config) -> None:
    """``[privacy]``: a secure or homomorphic sum needs a linear strategy and sound settings."""
    v = c.privacy
    if v.aggregation == "plain":
        return
    linear_rule(c.strategy.name, aggregation=v.aggregation)
    n = c.partition.num_sites
    _require(n >= 2, f"privacy.aggregation = '{v.aggregation}' needs at least 2 sites")
    f = c.federation
    sampled = min(n, max(f.min_sites, math.ceil(f.fraction * n)))
    t = v.secagg_threshold
    _require(
        t == 0 or sampled // 2 < t <= sampled,
        f"privacy.secagg_threshold = {t} must exceed half of the {sampled} sites sampled "
        f"each round and not exceed them (choose {sampled // 2 + 1}..{sampled}, or 0 for "
        "a strict majority)",
    )
    _require(
        v.secagg_clip > 0 and math.isfinite(v.secagg_clip),
        f"privacy.secagg_clip must be positive, got {v.secagg_clip}",
    )
    _require(8 <= v.secagg_bits <= 48, f"privacy.secagg_bits must be in 8..48, got {v.secagg_bits}")
    h = v.he_min_contributions
    _require(
        h == 0 or 2 <= h <= sampled,
        f"privacy.he_min_contributions = {h} must be 2..{sampled} (the sites sampled each "
        "round), or 0 for a strict majority of them",
    )
    _require(
        v.he_poly_modulus_degree in (8192, 16384, 32768),
        "privacy.he_poly_modulus_degree must be 8192, 16384 or 32768, "
        f"got {v.he_poly_modulus_degree}",
    )
    _require(
        20 <= v.he_scale_bits <= 50,
        f"privacy.he_scale_bits must be in 20..50, got {v.he_scale_bits}",
    )


def _check_task(c: Config) -> None:
    """The task exists, fits the data source, and its own keys are in range.

    A task fits a source when the task lists the source or the source lists the task.
    """
    t, r = c.task, c.report
    task = TASKS.lookup(t.name)
    source_for(c.data.source)  # an unknown source is named before the fit is checked
    fitting = [n for n in SOURCES.names() if n in task.sources or t.name in SOURCES[n].tasks]
    _require(
        c.data.source in fitting,
        f"task.name = '{t.name}' does not fit data.source = '{c.data.source}'; "
        f"use one of {fitting}",
    )
    _require(t.target_scale > 0, f"task.target_scale must be positive, got {t.target_scale}")
    _require(r.min_count >= 1, f"report.min_count must be at least 1, got {r.min_count}")
    _require(
        0.0 < r.flag_distance <= 1.0,
        f"report.flag_distance must be in (0, 1], got {r.flag_distance}",
    )
    _require(r.km_bin_width >= 0, f"report.km_bin_width must not be negative, got {r.km_bin_width}")
    if t.name != "classification":
        for name, site in sorted(c.sites.items()):
            _require(
                site.fault != "label_flip",
                f"sites.{name}.fault = 'label_flip' needs class labels; "
                f"task.name = '{t.name}' has none: choose another fault",
            )


def check_dp(c: Config) -> None:
    """``[privacy]`` DP keys: ranges, and whether the strategy can run under the chosen DP."""
    v = c.privacy
    _require(0.0 < v.delta < 1.0, f"privacy.delta must be in (0, 1), got {v.delta}")
    _require(
        v.noise_multiplier > 0,
        f"privacy.noise_multiplier must be positive, got {v.noise_multiplier}",
    )
    _require(v.max_grad_norm > 0, f"privacy.max_grad_norm must be positive, got {v.max_grad_norm}")
    _require(v.clip_norm > 0, f"privacy.clip_norm must be positive, got {v.clip_norm}")
    _require(
        v.target_epsilon is None or v.target_epsilon > 0,
        f"privacy.target_epsilon must be positive, got {v.target_epsilon}",
    )
    _require(
        0.0 < v.adaptive_clip_quantile < 1.0,
        f"privacy.adaptive_clip_quantile must be in (0, 1), got {v.adaptive_clip_quantile}",
    )
    _require(
        v.adaptive_clip_lr > 0,
        f"privacy.adaptive_clip_lr must be positive, got {v.adaptive_clip_lr}",
    )
    _require(
        v.adaptive_clip_count_noise > 0,
        f"privacy.adaptive_clip_count_noise must be positive, got {v.adaptive_clip_count_noise}",
    )
    _require(
        v.dp != "none" or not v.insecure_reproducible_noise,
        "privacy.insecure_reproducible_noise = true applies to DP noise, and privacy.dp = "
        "'none' draws none: remove the key",
    )
    name = c.strategy.name
    _require(
        v.dp != "client" or v.aggregation == "plain" or v.noise_at == "site",
        f"privacy.dp = 'client' with privacy.aggregation = '{v.aggregation}': "
        + SERVER_NOISE_REFUSAL,
    )
    if v.dp == "sample":
        reason = SAMPLE_DP_REFUSED.get(name)
        _require(reason is None, f"privacy.dp = 'sample' with strategy '{name}': {reason}")
    if v.dp == "client":
        refusal = client_dp_refusal(name)
        _require(refusal is None, f"strategy.name = '{name}': {refusal}")
        _require(
            not v.adaptive_clip
            or v.target_epsilon is not None
            or v.noise_multiplier < 2 * v.adaptive_clip_count_noise,
            "privacy.adaptive_clip: the noise on the count of clipped updates takes part of the "
            f"privacy budget, so privacy.noise_multiplier ({v.noise_multiplier}) must be below "
            f"2 * privacy.adaptive_clip_count_noise ({2 * v.adaptive_clip_count_noise}); "
            "raise adaptive_clip_count_noise or lower noise_multiplier",
        )
        if v.aggregation == "secagg" and v.target_epsilon is None:
            _check_secagg_noise_room(c)


def _check_secagg_noise_room(c: Config) -> None:
    """DP-FedAvg's noised changes fit secure aggregation's fixed-point range (fixed noise)."""
    v, f, n = c.privacy, c.federation, c.partition.num_sites
    count_noise = v.adaptive_clip_count_noise if v.adaptive_clip else None
    problem = secagg_noise_room(
        secagg_clip=v.secagg_clip,
        clip_norm=v.clip_norm,
        update_noise_multiplier=update_noise_multiplier(
            noise_multiplier=v.noise_multiplier, count_noise=count_noise
        ),
        count_noise=count_noise,
        sites=min(n, max(f.min_sites, math.ceil(f.fraction * n))),
    )
    _require(problem is None, str(problem))


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
    from any working directory.
    """
    raw = apply_overrides(read_toml(path), overrides or [])
    config = config_from_dict(raw)
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
