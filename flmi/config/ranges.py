"""The allowed range of every numeric config key that has one, for ``flmi config keys``.

Each table checks its values itself when it is made (:mod:`flmi.config.schema`);
this table states the same bounds as data, so the listing can show them. A
test makes each table with the values on and just past every bound, so a
range here that drifts from the check it describes fails.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` leaves that side open-ended.

    Parameters
    ----------
    low, high
        The bounds.
    low_open, high_open
        Whether the bound itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        """``>= 1``, ``> 0``, ``<= 1`` or ``in [0, 1)``."""

        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else repr(v)

        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{num(self.low)}, {num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        assert self.high is not None
        return f"{'<' if self.high_open else '<='} {num(self.high)}"


AT_LEAST_1 = Range(low=1)
POSITIVE = Range(low=0, low_open=True)
NOT_NEGATIVE = Range(low=0)
FRACTION = Range(low=0, high=1, low_open=True)  # (0, 1]
BELOW_1 = Range(low=0, high=1, high_open=True)  # [0, 1)
UNIT = Range(low=0, high=1)  # [0, 1]
OPEN_UNIT = Range(low=0, high=1, low_open=True, high_open=True)  # (0, 1)

#: ``{dotted key: its range}``; ``sites.NAME`` stands for every site's table.
RANGES: dict[str, Range] = {
    "data.transforms.window_width": POSITIVE,
    "data.val_fraction": BELOW_1,
    "data.test_fraction": OPEN_UNIT,
    "partition.num_sites": AT_LEAST_1,
    "partition.alpha": POSITIVE,
    "partition.min_examples_per_site": AT_LEAST_1,
    "task.num_classes": Range(low=2),
    "task.width": AT_LEAST_1,
    "task.target_scale": POSITIVE,
    "task.in_channels": AT_LEAST_1,
    "task.sw_overlap": BELOW_1,
    "task.init_features": AT_LEAST_1,
    "task.growth_rate": AT_LEAST_1,
    "federation.rounds": AT_LEAST_1,
    "federation.fraction": FRACTION,
    "federation.min_sites": AT_LEAST_1,
    "federation.local_epochs": AT_LEAST_1,
    "federation.local_steps": NOT_NEGATIVE,
    "federation.lr": POSITIVE,
    "federation.batch_size": AT_LEAST_1,
    "federation.momentum": BELOW_1,
    "federation.weight_decay": NOT_NEGATIVE,
    "federation.eval_every": AT_LEAST_1,
    "federation.pseudo_label_threshold": UNIT,
    "federation.unlabeled_loss_weight": NOT_NEGATIVE,
    "federation.unlabeled_weight": FRACTION,
    "federation.pseudo_label_quota": FRACTION,
    "federation.max_failed_rounds": AT_LEAST_1,
    "baselines.pooled_lr": POSITIVE,
    "baselines.pooled_batch_size": POSITIVE,
    "baselines.pooled_epochs": POSITIVE,
    "runtime.torch_threads": AT_LEAST_1,
    "runtime.num_cpus_per_site": POSITIVE,
    "runtime.num_gpus_per_site": NOT_NEGATIVE,
    "runtime.max_workers": AT_LEAST_1,
    "report.bootstrap_resamples": NOT_NEGATIVE,
    "report.histogram_bins": Range(low=2, high=10000),
    "report.target_sensitivity": FRACTION,
    "report.min_count": AT_LEAST_1,
    "report.flag_distance": FRACTION,
    "report.km_bin_width": NOT_NEGATIVE,
    "privacy.delta": OPEN_UNIT,
    "privacy.noise_multiplier": POSITIVE,
    "privacy.max_grad_norm": POSITIVE,
    "privacy.target_epsilon": POSITIVE,
    "privacy.clip_norm": POSITIVE,
    "privacy.adaptive_clip_quantile": OPEN_UNIT,
    "privacy.adaptive_clip_lr": POSITIVE,
    "privacy.adaptive_clip_count_noise": POSITIVE,
    "privacy.secagg_clip": POSITIVE,
    "privacy.secagg_bits": Range(low=8, high=48),
    "privacy.he_scale_bits": Range(low=20, high=50),
    "sites.NAME.local_epochs": POSITIVE,
    "sites.NAME.local_steps": NOT_NEGATIVE,
    "sites.NAME.lr": POSITIVE,
    "sites.NAME.batch_size": POSITIVE,
    "sites.NAME.fault_scale": POSITIVE,
    "sites.NAME.fault_noise_std": POSITIVE,
    "sites.NAME.labeled_fraction": UNIT,
    "sites.NAME.train_fraction": FRACTION,
    "deploy.round_timeout_s": POSITIVE,
    "deploy.wait_for_sites_s": POSITIVE,
    "deploy.heartbeat_s": POSITIVE,
    "deploy.chunk_bytes": Range(low=1024),
    "deploy.max_payload_bytes": AT_LEAST_1,
}
