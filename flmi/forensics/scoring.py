"""Scoring a coalition's model on the sites' validation splits (simulation).

The run's config snapshot gives back its data, partition and task; the model
is scored on every site's validation split together (never a test split),
by the task's own ``evaluate``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from flmi.config import check_site_names
from flmi.config.schema import Config
from flmi.core.errors import ConfigError
from flmi.core.keys import Metric, SegmentationMetric
from flmi.core.params import Params
from flmi.data.arrays import ArraySplit, concat_splits
from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.forensics.replay import run_config
from flmi.tasks.device import resolve_device
from flmi.tasks.registry import build_task
from flmi.tasks.torch_params import load_params

#: The score each task's contributions are measured in by default (higher is better).
DEFAULT_METRIC = {
    "classification": Metric.AUC.value,
    "segmentation": SegmentationMetric.DICE.value,
    "regression": Metric.R2.value,
    "survival": Metric.C_INDEX.value,
}


def default_metric(config: Config) -> str:
    """The metric contributions are measured in for ``config``'s task."""
    return DEFAULT_METRIC.get(config.task.name, Metric.ACCURACY.value)


class ValidationScorer:
    """Scores weights on the union of every site's validation split.

    Parameters
    ----------
    config
        The run's config snapshot.
    metric
        The metric to report; ``"loss"`` is negated, so higher is better for all.
    max_examples
        Score on this many validation examples, drawn once (seeded by
        ``federation.seed``) and kept for every call; 0: all of them.
    """

    def __init__(self, *, config: Config, metric: str, max_examples: int = 0) -> None:
        torch.set_num_threads(config.runtime.torch_threads)
        data = load_data(config)
        check_site_names(config, list(data.sites))
        data, _ = semi_supervised_data(config, data)
        self._task = build_task(config, data)
        self._device = resolve_device(config.runtime.device)
        self._model = self._task.build_model(seed=config.federation.seed).to(self._device)
        val = concat_splits([data.sites[s].val for s in sorted(data.sites)])
        if 0 < max_examples < len(val.y):
            rng = np.random.default_rng(config.federation.seed)
            keep = np.sort(rng.choice(len(val.y), size=max_examples, replace=False))
            val = ArraySplit(x=val.x[keep], y=val.y[keep])
        self._data: ArraySplit = val
        self.metric = metric
        self.calls = 0

    @property
    def num_examples(self) -> int:
        """Validation examples scored per call."""
        return len(self._data.y)

    def __call__(self, params: Params) -> float:
        """``params``'s score (higher is better).

        Raises
        ------
        ConfigError
            The task does not report the metric, or it is undefined (NaN) here.
        """
        self.calls += 1
        load_params(self._model, params, where="contribution scoring")
        metrics = self._task.evaluate(model=self._model, data=self._data, device=self._device)
        if self.metric not in metrics:
            raise ConfigError(
                f"--metric {self.metric}: the task reports {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise ConfigError(
                f"--metric {self.metric} is undefined on the validation splits "
                "(one class only?); choose another metric"
            )
        return -value if self.metric == Metric.LOSS.value else value


def scorer_for(run_dir: Path, *, metric: str | None, max_examples: int = 0) -> ValidationScorer:
    """A :class:`ValidationScorer` for the run in ``run_dir``."""
    config = run_config(run_dir)
    return ValidationScorer(
        config=config, metric=metric or default_metric(config), max_examples=max_examples
    )
