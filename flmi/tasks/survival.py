"""Survival: a linear Cox proportional-hazards model, trained on the partial likelihood.

Targets are ``(N, 2)`` rows ``[event, time]`` (event 1: observed, 0: censored),
as in FLamby's Fed-TCGA-BRCA. The model outputs one risk score per patient;
the metric is Harrell's C-index from lifelines.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from flmi.core.errors import ConfigError, LabelError
from flmi.core.keys import Metric
from flmi.data.arrays import ArraySplit
from flmi.tasks.base import NoScoreHistogram
from flmi.tasks.common import SupervisedTask
from flmi.tasks.torch_params import as_tensor

DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVENT, TIME = 0, 1


def cox_loss(risk: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood with Breslow's handling of ties, per patient.

    For every observed event ``i`` the risk set is every patient still
    followed at ``T_i`` (``T_j >= T_i``, tied times included: Breslow). The sum
    over events of ``log sum_{j in R(i)} exp(r_j) - r_i`` is divided by the
    number of patients in the batch, as FLamby's loss is (so a batch without
    an event contributes zero).

    Parameters
    ----------
    risk
        Risk scores ``(N,)``; a higher score means an earlier event.
    target
        ``(N, 2)`` rows ``[event, time]``.
    """
    event, time = target[:, EVENT].to(risk.dtype), target[:, TIME]
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # row i: who is at risk at T_i
    scores = risk.unsqueeze(0).expand(risk.shape[0], -1).masked_fill(~at_risk, float("-inf"))
    log_denominator = torch.logsumexp(scores, dim=1)
    return ((log_denominator - risk) * event).sum() / max(int(risk.shape[0]), 1)


def c_index(*, target: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (lifelines) of ``risk`` scores; NaN when no pair can be compared."""
    from lifelines.utils import concordance_index

    if target.shape[0] < 2:
        return float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(concordance_index(target[:, TIME], -risk, target[:, EVENT]))
    except ZeroDivisionError:  # lifelines: no admissible pairs (no event, or all tied)
        return float("nan")


class CoxTask(SupervisedTask, NoScoreHistogram):
    """A linear Cox model on feature vectors (FLamby's Fed-TCGA-BRCA baseline).

    Parameters
    ----------
    in_channels
        Number of features.
    spatial_dims
        Must be 0: the Cox model takes feature vectors.
    dtype
        ``"float32"`` or ``"float64"``.
    """

    def __init__(self, *, in_channels: int, spatial_dims: int, dtype: str = "float32") -> None:
        if spatial_dims != 0:
            raise ConfigError(
                "task.name = 'survival' takes feature vectors (one row per patient), "
                f"but the data has {spatial_dims} spatial dimensions"
            )
        if dtype not in DTYPES:
            raise ConfigError(f"task.dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.dtype = DTYPES[dtype]

    @property
    def name(self) -> str:
        """The config name, ``"survival"``."""
        return "survival"

    def build_model(self, *, seed: int) -> torch.nn.Module:
        """``Linear(features, 1)`` initialised from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torch.nn.Linear(self.in_channels, 1)
        return model.to(self.dtype)

    def check_labels(self, *, data: ArraySplit, where: str) -> None:
        """Targets must be ``[event, time]`` rows: event 0 or 1, time finite and not negative."""
        y = data.y
        if y.ndim != 2 or y.shape[1] != 2:
            raise LabelError(
                f"{where}: survival targets must be (N, 2) rows [event, time], got shape {y.shape}"
            )
        if len(data) == 0:
            return
        events, times = y[:, EVENT], y[:, TIME].astype(np.float64)
        if not np.isin(events, (0, 1)).all():
            raise LabelError(f"{where}: an event indicator is not 0 or 1; fix the event column")
        if not (np.isfinite(times).all() and (times >= 0).all()):
            raise LabelError(
                f"{where}: a follow-up time is missing or negative; fix the time column"
            )

    def training_tensors(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and ``[event, time]`` rows, both in the task's dtype."""
        return as_tensor(data.x, self.dtype), as_tensor(data.y, self.dtype)

    def training_loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The Cox loss of one batch."""
        return cox_loss(model(x)[:, 0], y)

    @torch.no_grad()
    def risk(self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
        """Risk scores ``(N,)``, in evaluation mode."""
        model.eval()
        if x.shape[0] == 0:
            return np.zeros(0)
        out: np.ndarray = model(as_tensor(x, self.dtype).to(device))[:, 0].double().cpu().numpy()
        return out

    def scored(
        self, *, model: torch.nn.Module, data: ArraySplit, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """``[event, time]`` rows and risk scores ``(N,)``."""
        return data.y, self.risk(model=model, x=data.x, device=device)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Cox loss on the whole split and Harrell's C-index."""
        loss = cox_loss(torch.from_numpy(predictions), torch.from_numpy(targets.astype(np.float64)))
        return {Metric.LOSS: float(loss), Metric.C_INDEX: c_index(target=targets, risk=predictions)}

    def empty_metrics(self, data: ArraySplit) -> dict[str, float]:
        """NaN for both metrics."""
        return {Metric.LOSS: math.nan, Metric.C_INDEX: math.nan}
