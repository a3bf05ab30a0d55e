"""The configuration's tables: one frozen dataclass per TOML table.

Each table checks its own values when it is made (``__post_init__``): a value
out of range, or keys of the one table that contradict each other, is a
:class:`ConfigError` that names the dotted key and the fix. Checks that need
two tables, or a registry (strategies, tasks, data sources, runtimes), are in
:mod:`flmi.config.checks` and :mod:`flmi.config.privacy_checks`.

This module is a leaf: it imports nothing of flmi but the errors, so the
tables can be read and made without loading torch or any registry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from flmi.core.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class SiteFieldError(ConfigError):
    """A ``[sites.NAME]`` value out of range.

    A site's table learns its name only from the ``[sites]`` table that holds
    it, so the message says ``sites.NAME`` until :meth:`for_site` names it.
    """

    def __init__(self, detail: str, *, site: str = "NAME") -> None:
        super().__init__(f"sites.{site}{detail}")
        self.detail = detail

    def for_site(self, site: str) -> SiteFieldError:
        """The same error, naming ``site``."""
        return SiteFieldError(self.detail, site=site)


def _require_site(ok: bool, detail: str) -> None:
    if not ok:
        raise SiteFieldError(detail)


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

    def __post_init__(self) -> None:
        _require(
            len(self.spatial_size) in (0, 2, 3) and all(v >= 1 for v in self.spatial_size),
            "data.transforms.spatial_size must hold 2 (images) or 3 (volumes) positive sizes, "
            f"got {self.spatial_size}",
        )
        _require(
            len(self.spacing) in (0, 2, 3) and all(v > 0 for v in self.spacing),
            "data.transforms.spacing must hold 2 or 3 positive voxel sizes in mm, "
            f"got {self.spacing}",
        )
        _require(
            not (self.spatial_size and self.spacing) or len(self.spatial_size) == len(self.spacing),
            f"data.transforms.spacing {self.spacing} and spatial_size {self.spatial_size} must "
            "have one value per spatial axis each",
        )
        if self.orientation:
            _require(
                len(self.orientation) == 3 and set(self.orientation.upper()) <= set("LRAPSI"),
                "data.transforms.orientation must be three axis codes such as 'RAS', "
                f"got {self.orientation!r}",
            )
            _require(
                len(self.spatial_size) != 2 and len(self.spacing) != 2,
                "data.transforms.orientation applies to volumes: give spatial_size (or spacing) "
                "3 values, or leave orientation out",
            )
        _require(
            self.channels in (0, 1, 3),
            f"data.transforms.channels must be 0 (keep), 1 or 3, got {self.channels}",
        )
        _require(
            self.window_width > 0,
            f"data.transforms.window_width must be positive, got {self.window_width}",
        )


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

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        _require(
            0.0 < self.test_fraction < 1.0,
            f"data.test_fraction must be in (0, 1), got {self.test_fraction}",
        )
        _require(
            not self.name or self.source == "medmnist",
            f"data.name = '{self.name}' names a MedMNIST data set: set data.source = 'medmnist' "
            "or leave data.name out",
        )


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

    def __post_init__(self) -> None:
        _require(
            self.num_sites >= 1, f"partition.num_sites must be at least 1, got {self.num_sites}"
        )
        _require(self.alpha > 0, f"partition.alpha must be positive, got {self.alpha}")
        _require(
            self.min_examples_per_site >= 1,
            f"partition.min_examples_per_site must be at least 1, got {self.min_examples_per_site}",
        )


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

    def __post_init__(self) -> None:
        _require(
            self.num_classes >= 2, f"task.num_classes must be at least 2, got {self.num_classes}"
        )
        _require(
            0 <= self.positive_label < self.num_classes,
            f"task.positive_label = {self.positive_label} is not a class; "
            f"choose one of 0..{self.num_classes - 1}",
        )
        _require(
            self.in_channels is None or self.in_channels >= 1,
            f"task.in_channels must be at least 1, got {self.in_channels}",
        )
        _require(
            self.spatial_dims in (None, 0, 2, 3),
            f"task.spatial_dims must be 0 (tabular), 2 or 3, got {self.spatial_dims}",
        )
        for key in ("width", "init_features", "growth_rate"):
            value = getattr(self, key)
            _require(value >= 1, f"task.{key} must be at least 1, got {value}")
        _require(
            self.target_scale > 0, f"task.target_scale must be positive, got {self.target_scale}"
        )
        _require(
            0.0 <= self.sw_overlap < 1.0,
            f"task.sw_overlap must be in [0, 1), got {self.sw_overlap}",
        )
        self._check_weights()

    def _check_weights(self) -> None:
        for key in ("freeze", "init_skip"):
            for prefix in getattr(self, key):
                _require(
                    bool(prefix.strip()) and "," not in prefix,
                    f"task.{key}: {prefix!r} is not a tensor name prefix; give module paths such "
                    "as 'features.0' or 'head'",
                )
        _require(
            not self.init_skip or bool(self.init_weights),
            "task.init_skip names tensors to leave out of task.init_weights, which is not set",
        )
        _require(
            not self.init_weights or self.init_weights.endswith(".safetensors"),
            f"task.init_weights = '{self.init_weights}': only .safetensors files are read "
            "(nothing pickled is ever loaded); convert the weights to safetensors",
        )


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

    def __post_init__(self) -> None:
        for key in ("rounds", "min_sites", "local_epochs", "batch_size", "eval_every"):
            value = getattr(self, key)
            _require(value >= 1, f"federation.{key} must be at least 1, got {value}")
        _require(
            self.max_failed_rounds >= 1,
            f"federation.max_failed_rounds must be at least 1, got {self.max_failed_rounds}",
        )
        _require(
            0.0 < self.fraction <= 1.0,
            f"federation.fraction must be in (0, 1], got {self.fraction}",
        )
        for key in ("local_steps", "weight_decay", "unlabeled_loss_weight"):
            value = getattr(self, key)
            _require(value >= 0, f"federation.{key} must not be negative, got {value}")
        _require(self.lr > 0, f"federation.lr must be positive, got {self.lr}")
        _require(
            0.0 <= self.momentum < 1.0,
            f"federation.momentum must be in [0, 1), got {self.momentum}",
        )
        _require(
            0.0 <= self.pseudo_label_threshold <= 1.0,
            "federation.pseudo_label_threshold must be in [0, 1], "
            f"got {self.pseudo_label_threshold}",
        )
        _require(
            0.0 < self.pseudo_label_quota <= 1.0,
            "federation.pseudo_label_quota must be in (0, 1] (the share of a site's unlabeled "
            f"images that get a pseudo-label each round), got {self.pseudo_label_quota}",
        )
        _require(
            0.0 < self.unlabeled_weight <= 1.0,
            f"federation.unlabeled_weight must be in (0, 1], got {self.unlabeled_weight}",
        )


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

    def __post_init__(self) -> None:
        for key in ("pooled_lr", "pooled_batch_size", "pooled_epochs"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"baselines.{key} must be positive, got {value}")


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: how messages move and where training runs.

    ``tensorboard`` and ``mlflow`` also log every round's metrics to
    ``RUN_DIR/tensorboard/`` and to an MLflow file store in ``RUN_DIR/mlruns/``
    (the ``trackers`` extra).

    ``name = "ray"`` (the ``ray`` extra) spreads the sites over Ray workers:
    ``address`` unset starts a local Ray instance for the run and stops it
    after; ``"auto"`` or ``"HOST:PORT"`` joins a running cluster. Each worker
    trains one site at a time and reserves ``num_cpus_per_site`` CPUs and
    ``num_gpus_per_site`` GPUs (a fraction shares a GPU); ``max_workers``
    unset: as many workers as the resources allow, at most one per site.
    """

    name: str = "inprocess"  # any runtime of flmi.runtime.registry.RUNTIMES
    device: Literal["cpu", "cuda", "auto"] = "auto"
    torch_threads: int = 1
    tensorboard: bool = False
    mlflow: bool = False
    address: str | None = None
    num_cpus_per_site: float = 1.0
    num_gpus_per_site: float = 0.0
    max_workers: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.torch_threads >= 1,
            f"runtime.torch_threads must be at least 1, got {self.torch_threads}",
        )
        _require(
            self.address is None or self.address == "auto" or _host_port(self.address),
            f"runtime.address must be 'auto' or HOST:PORT (a port 1-65535), got "
            f"{self.address!r}; leave it unset to start a local Ray instance",
        )
        _require(
            self.num_cpus_per_site > 0,
            f"runtime.num_cpus_per_site must be positive, got {self.num_cpus_per_site}",
        )
        _require(
            self.num_gpus_per_site >= 0,
            f"runtime.num_gpus_per_site must be 0 or more, got {self.num_gpus_per_site}",
        )
        _require(
            self.max_workers is None or self.max_workers >= 1,
            f"runtime.max_workers must be at least 1, got {self.max_workers}; "
            "leave it unset to use what the resources allow",
        )


def _host_port(address: str) -> bool:
    """Whether ``address`` reads as ``HOST:PORT`` with a port in 1..65535."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)


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

    def __post_init__(self) -> None:
        _require(
            len(set(self.sites)) == len(self.sites),
            "deploy.sites names a site twice; list each once",
        )
        for key in ("round_timeout_s", "wait_for_sites_s", "heartbeat_s"):
            value = getattr(self, key)
            _require(value > 0, f"deploy.{key} must be positive, got {value}")
        _require(
            self.chunk_bytes >= 1024,
            f"deploy.chunk_bytes must be at least 1024, got {self.chunk_bytes}",
        )
        _require(
            self.max_message_bytes >= self.chunk_bytes + 65536,
            f"deploy.max_message_bytes = {self.max_message_bytes} must exceed deploy.chunk_bytes "
            f"= {self.chunk_bytes} by at least 65536 (room for a frame's header)",
        )
        _require(
            self.max_payload_bytes >= 1,
            f"deploy.max_payload_bytes must be positive, got {self.max_payload_bytes}",
        )


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

    def __post_init__(self) -> None:
        _require(
            self.bootstrap_resamples >= 0,
            f"report.bootstrap_resamples must not be negative, got {self.bootstrap_resamples}",
        )
        _require(
            2 <= self.histogram_bins <= 10000,
            f"report.histogram_bins must be in 2..10000, got {self.histogram_bins}",
        )
        ts = self.target_sensitivity
        _require(
            ts is None or 0.0 < ts <= 1.0,
            f"report.target_sensitivity must be in (0, 1], got {ts}",
        )
        _require(self.min_count >= 1, f"report.min_count must be at least 1, got {self.min_count}")
        _require(
            0.0 < self.flag_distance <= 1.0,
            f"report.flag_distance must be in (0, 1], got {self.flag_distance}",
        )
        _require(
            self.km_bin_width >= 0,
            f"report.km_bin_width must not be negative, got {self.km_bin_width}",
        )


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

    def __post_init__(self) -> None:
        _require(0.0 < self.delta < 1.0, f"privacy.delta must be in (0, 1), got {self.delta}")
        for key in (
            "noise_multiplier",
            "max_grad_norm",
            "clip_norm",
            "adaptive_clip_lr",
            "adaptive_clip_count_noise",
        ):
            value = getattr(self, key)
            _require(value > 0, f"privacy.{key} must be positive, got {value}")
        _require(
            self.target_epsilon is None or self.target_epsilon > 0,
            f"privacy.target_epsilon must be positive, got {self.target_epsilon}",
        )
        _require(
            0.0 < self.adaptive_clip_quantile < 1.0,
            f"privacy.adaptive_clip_quantile must be in (0, 1), got {self.adaptive_clip_quantile}",
        )
        _require(
            self.dp != "none" or not self.insecure_reproducible_noise,
            "privacy.insecure_reproducible_noise = true applies to DP noise, and privacy.dp = "
            "'none' draws none: remove the key",
        )
        self._check_secure_sum()

    def _check_secure_sum(self) -> None:
        _require(
            self.secagg_clip > 0 and math.isfinite(self.secagg_clip),
            f"privacy.secagg_clip must be positive, got {self.secagg_clip}",
        )
        _require(
            8 <= self.secagg_bits <= 48,
            f"privacy.secagg_bits must be in 8..48, got {self.secagg_bits}",
        )
        _require(
            self.he_poly_modulus_degree in (8192, 16384, 32768),
            "privacy.he_poly_modulus_degree must be 8192, 16384 or 32768, "
            f"got {self.he_poly_modulus_degree}",
        )
        _require(
            20 <= self.he_scale_bits <= 50,
            f"privacy.he_scale_bits must be in 20..50, got {self.he_scale_bits}",
        )


@dataclass(frozen=True)
class RecordConfig:
    """``[record]``: keep what each round aggregated, for replay, inspection and contribution.

    ``updates = true`` keeps, for every round, the global model and each
    site's update in ``RUN_DIR/record`` (safetensors files named by their
    SHA-256, nothing pickled) with one JSON manifest per round (round, site,
    file hash, example count, weight, strategy and its state before the
    round), so ``flmi replay``, ``flmi inspect`` and ``flmi contributions``
    can work from it with no training. It needs ``privacy.aggregation =
    "plain"``: under ``"secagg"`` or ``"he"`` the server never sees one
    site's update, by design. ``contributions = true`` (simulation) scores
    each site's contribution from the record when the run ends (see
    ``flmi contributions``).
    """

    updates: bool = False
    contributions: bool = False

    def __post_init__(self) -> None:
        _require(
            self.updates or not self.contributions,
            "record.contributions = true is computed from the recorded updates: "
            "set record.updates = true as well",
        )


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

    def __post_init__(self) -> None:
        for key in ("local_epochs", "local_steps", "lr", "batch_size"):
            value = getattr(self, key)
            _require_site(
                value is None or value > 0 or (key == "local_steps" and value == 0),
                f".{key} must be positive, got {value}",
            )
        _require_site(self.fault_scale > 0, ".fault_scale must be positive")
        _require_site(self.fault_noise_std > 0, ".fault_noise_std must be positive")
        _require_site(
            0.0 <= self.labeled_fraction <= 1.0,
            f".labeled_fraction must be in [0, 1], got {self.labeled_fraction}",
        )
        _require_site(
            self.labeled or self.labeled_fraction == 1.0,
            ": labeled = false hides every label; leave labeled_fraction out, "
            "or set labeled = true to keep that share of the labels",
        )
        _require_site(
            0.0 < self.train_fraction <= 1.0,
            f".train_fraction must be in (0, 1], got {self.train_fraction}",
        )


@dataclass(frozen=True)
class CompressionConfig:
    """``[compression]``: how model updates travel (see docs/communication.md).

    ``method`` is ``"none"`` (float32 in full), ``"quantize"`` (stochastic
    ``bits``-bit quantisation, 8, 4 or 2, unbiased, one scale per tensor;
    QSGD), ``"topk"`` (each tensor's largest-magnitude ``fraction`` of values,
    with error feedback kept in the site's state) or ``"powersgd"``
    (rank-``rank`` power iteration with error feedback; Vogels et al. 2019),
    or a compressor of a plug-in (entry-point group ``flmi.compressors``).
    The sites' updates (the uplink) are compressed; the global model still
    goes down in full.
    Compression comes after any DP noise (post-processing: the privacy
    budget holds); secure aggregation allows only linear (unbiased)
    compressors; strategies whose sites send full weights refuse it.
    """

    method: str = "none"
    bits: int = 8
    fraction: float = 0.01
    rank: int = 4

    def __post_init__(self) -> None:
        _require(
            self.bits in (8, 4, 2),
            f"compression.bits must be 8, 4 or 2, got {self.bits}",
        )
        _require(
            0.0 < self.fraction <= 1.0,
            f"compression.fraction must be in (0, 1] (0.01 keeps 1 % of each tensor), "
            f"got {self.fraction}",
        )
        _require(self.rank >= 1, f"compression.rank must be at least 1, got {self.rank}")


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
    record: RecordConfig = field(default_factory=RecordConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain TOML-ready tables (strategy options inlined, unset keys left out)."""
        out = dataclasses.asdict(self)
        options = out["strategy"].pop("options")
        out["strategy"].update(options)
        for table in ("baselines", "partition", "report", "privacy", "task", "runtime"):
            out[table] = {k: v for k, v in out[table].items() if v is not None}
        out["sites"] = {
            name: {k: v for k, v in table.items() if v is not None}
            for name, table in out["sites"].items()
        }
        if not out["sites"]:
            del out["sites"]
        return out
