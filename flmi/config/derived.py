"""Settings derived from a validated :class:`~flmi.config.schema.Config`.

The hyperparameters every site receives, and the per-site shares and groups
a simulation reads from ``[sites.NAME]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flmi.core.keys import HParam

if TYPE_CHECKING:
    from flmi.config.schema import Config
    from flmi.core.messages import HParamValue


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
    k = config.compression
    if k.method != "none":
        out[HParam.COMPRESSION] = k.method
        out[HParam.COMPRESSION_BITS] = k.bits
        out[HParam.COMPRESSION_FRACTION] = k.fraction
        out[HParam.COMPRESSION_RANK] = k.rank
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
