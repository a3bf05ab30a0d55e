"""Every wire, metric and record key, spelled once.

Two sides that must agree on a name import it from here instead of typing the
string twice.
"""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """Metric names reported by tasks and written to the run directory."""

    LOSS = "loss"
    ACCURACY = "accuracy"
    BALANCED_ACCURACY = "balanced_accuracy"
    AUC = "auc"
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    MAE = "mae"
    RMSE = "rmse"
    R2 = "r2"
    C_INDEX = "c_index"


class SegmentationMetric(StrEnum):
    """Metric names of segmentation; per-class values add ``_<class>`` (``dice_1``)."""

    LOSS = "loss"
    DICE = "dice"
    HD95 = "hd95"


class MultiLabelMetric(StrEnum):
    """Metric names of multi-label classification; per-label AUC adds ``_<label>`` (``auc_0``)."""

    LOSS = "loss"
    AUC = "auc"
    ACCURACY = "accuracy"


class Arm(StrEnum):
    """The arms one run can compare."""

    FEDERATED = "federated"
    POOLED = "pooled"
    LOCAL = "local"


class Split(StrEnum):
    """Data splits held by a site."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Record(StrEnum):
    """Keys of a `metrics.jsonl` line and of `summary.json`."""

    ROUND = "round"
    ARM = "arm"
    GLOBAL = "global"
    PER_SITE = "per_site"
    SITE_MEAN = "site_mean"
    VAL = "val"
    WALL_S = "wall_s"
    BYTES_DOWN = "bytes_down"
    BYTES_UP = "bytes_up"
    SITES_SAMPLED = "sites_sampled"
    SITES_FAILED = "sites_failed"
    STRATEGY = "strategy"
    CI = "ci"
    ARMS = "arms"
    ROUNDS = "rounds"
    SEED = "seed"
    TORCH_THREADS = "torch_threads"
    VERSIONS = "versions"
    SITES = "sites"
    N_TRAIN = "n_train"
    LABEL_COUNTS = "label_counts"
    UNREADABLE = "unreadable"
    PRIVACY = "privacy"
    DATA = "data"
    SCHEMA_VERSION = "schema_version"
    DEVICE = "device"
    PLUGINS = "plugins"
    RUNTIME = "runtime"
    SITES_LEFT_OUT = "sites_left_out"
    SITE_SCANNERS = "site_scanners"
    THRESHOLD = "threshold"
    AT_THRESHOLD = "at_threshold"
    CONTRIBUTIONS = "contributions"


class HParam(StrEnum):
    """Hyperparameter names a server may put in a :class:`TrainInstruction`."""

    LR = "lr"
    LOCAL_EPOCHS = "local_epochs"
    LOCAL_STEPS = "local_steps"
    BATCH_SIZE = "batch_size"
    OPTIMIZER = "optimizer"
    MOMENTUM = "momentum"
    WEIGHT_DECAY = "weight_decay"
    PROX_MU = "prox_mu"
    CLIENT_ALGORITHM = "client_algorithm"
    KEEP_LOCAL = "keep_local"
    PERSONAL = "personal"
    DITTO_LAMBDA = "ditto_lambda"
    FINETUNE_EPOCHS = "finetune_epochs"
    SEMI_SUPERVISED = "semi_supervised"
    PSEUDO_LABEL_THRESHOLD = "pseudo_label_threshold"
    UNLABELED_LOSS_WEIGHT = "unlabeled_loss_weight"
    PSEUDO_LABEL_TEACHER = "pseudo_label_teacher"
    DISTRIBUTION_ALIGNMENT = "distribution_alignment"
    SOFT_PSEUDO_LABELS = "soft_pseudo_labels"
    PSEUDO_LABEL_SELECTION = "pseudo_label_selection"
    PSEUDO_LABEL_QUOTA = "pseudo_label_quota"
    FREEZE = "freeze"
    COMPRESSION = "compression"
    COMPRESSION_BITS = "compression_bits"
    COMPRESSION_FRACTION = "compression_fraction"
    COMPRESSION_RANK = "compression_rank"
    DP = "dp"
    DP_NOISE_MULTIPLIER = "dp_noise_multiplier"
    DP_MAX_GRAD_NORM = "dp_max_grad_norm"
    DP_DELTA = "dp_delta"
    DP_ACCOUNTANT = "dp_accountant"
    DP_TARGET_EPSILON = "dp_target_epsilon"
    DP_ROUNDS = "dp_rounds"
    DP_CLIP_NORM = "dp_clip_norm"
    DP_NUM_SITES = "dp_num_sites"
    DP_COUNT_NOISE = "dp_count_noise"
    FEDDYN_ALPHA = "feddyn_alpha"
    MOON_MU = "moon_mu"
    MOON_TEMPERATURE = "moon_temperature"


class SemiSupervised(StrEnum):
    """How a site learns from training images without labels."""

    NONE = "none"
    FIXMATCH = "fixmatch"
    PSEUDO_LABEL = "pseudo_label"


class PseudoLabelTeacher(StrEnum):
    """Which model predicts a semi-supervised site's pseudo-labels."""

    #: The model being trained, as it moves during the round (FixMatch's own choice).
    LOCAL = "local"
    #: A frozen copy of the global model the site received this round.
    GLOBAL = "global"


class PseudoLabelSelection(StrEnum):
    """Which unlabeled images of a semi-supervised site get a pseudo-label."""

    #: Every image whose (aligned) top class probability reaches the threshold.
    THRESHOLD = "threshold"
    #: Once a round, per class, the teacher's most confident images of that
    #: class, in numbers set by the quota and the teacher's class prior.
    CLASS_QUOTA = "class_quota"


class TrainMetric(StrEnum):
    """Training metrics a site reports beside the loss (semi-supervised training)."""

    UNLABELED_LOSS = "unlabeled_loss"
    PSEUDO_LABEL_RATE = "pseudo_label_rate"
    NUM_LABELED = "num_labeled"
    NUM_UNLABELED = "num_unlabeled"


class DPMode(StrEnum):
    """What differential privacy a site applies itself (``HParam.DP``).

    ``sample``: DP-SGD in local training. ``client``: the site clips its own
    update and adds its share of DP-FedAvg's noise (an untrusted server).
    """

    NONE = "none"
    SAMPLE = "sample"
    CLIENT = "client"


class PrivacyKey(StrEnum):
    """Keys of a site's privacy report (update metrics) and of the privacy records."""

    EPSILON = "dp_epsilon"
    NOISE_MULTIPLIER = "dp_noise_multiplier"
    SAMPLE_RATE = "dp_sample_rate"
    STEPS = "dp_steps"
    DELTA = "delta"
    LEDGER = "dp_ledger"


class Personal(StrEnum):
    """Whether a site also trains a personal model of its own, and how."""

    NONE = "none"
    DITTO = "ditto"


class KeepLocal(StrEnum):
    """Which tensors a site keeps to itself (never sent, restored from its own state)."""

    NONE = "none"
    NORM = "norm"
    HEAD = "head"
    GROUP_NORM = "group_norm"


class ClientAlgorithm(StrEnum):
    """How a site trains locally; named in every instruction so a site can refuse one."""

    STANDARD = "standard"
    SCAFFOLD = "scaffold"
    IFCA = "ifca"
    FEDDYN = "feddyn"
    MOON = "moon"


class Extra(StrEnum):
    """Prefixes of the named extra tensors instructions and updates carry."""

    SCAFFOLD_C = "scaffold.c/"
    SCAFFOLD_DELTA_C = "scaffold.delta_c/"
    LOCAL = "local/"
    PERSONAL = "personal/"
    CLUSTER = "cluster/"
    NORM = "norm/"
    DP_UNCLIPPED = "dp.unclipped"
    FEDDYN_GRAD = "feddyn.grad/"
    MOON_PREVIOUS = "moon.previous/"
    COMPRESSED = "compressed"


class Manifest(StrEnum):
    """Keys of the record's JSON manifests (``RUN_DIR/record``) and of forensics reports."""

    FORMAT = "format"
    ROUND = "round"
    ARM = "arm"
    STRATEGY = "strategy"
    SITES = "sites"
    SITE = "site"
    GLOBAL = "global"
    STATE = "state"
    STATE_META = "state_meta"
    UPDATES = "updates"
    SHA256 = "sha256"
    EXTRAS_SHA256 = "extras_sha256"
    KIND = "kind"
    NUM_EXAMPLES = "num_examples"
    NUM_STEPS = "num_steps"
    WEIGHT = "weight"
    METRICS = "metrics"
    NORM = "norm"
    COSINE = "cosine"
    COSINE_MEDIAN = "cosine_to_median"
    NORM_Z = "norm_z"
    COSINE_Z = "cosine_z"
    OUTLIER = "outlier"
    LAYERS = "layers"
    METHOD = "method"
    METRIC = "metric"
    SHAPLEY = "shapley"
    RANKING = "ranking"
    SCORE = "score"
    VAL_EXAMPLES = "val_examples"
    LEAVE_ONE_OUT = "leave_one_out"
    ROUNDS_SCORED = "rounds_scored"
    ROUNDS_TRUNCATED = "rounds_truncated"
    COALITIONS = "coalitions_evaluated"
    WALL_S = "wall_s"
    FULL_VALUE = "full_value"
    EMPTY_VALUE = "empty_value"
