"""A finished run's last-round updates, re-derived as its server received them.

A run directory keeps the global models of its last two rounds, not the
updates the sites sent. The server received, in round ``R``, what each
site's code made from the model of round ``R - 1``: the audit re-runs that
step through the simulation's own site code (:func:`flmi.federated_sites.
federated_sites`, the run's task, seed, hyper-parameters and privacy
settings) from the recorded model. Without DP the site code is
deterministic, so these are the updates the server held; :func:`replay_error`
checks it by aggregating them and comparing with the run's round-``R``
checkpoint. Under DP the noise comes from a secure source nobody can
replay, so the re-derived updates carry fresh noise of the same scale: the
same distribution as what the server held, not the same draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from flmi.config import Config
from flmi.core.errors import ConfigError
from flmi.core.messages import ClientError, TrainInstruction, UpdateKind
from flmi.core.params import Params
from flmi.data.arrays import FederatedData
from flmi.federated_sites import configured_sites
from flmi.tasks.base import Task


@dataclass(frozen=True)
class SiteUpdate:
    """One site's re-derived update: a delta (received minus sent) and its example count."""

    delta: Params
    num_examples: int
    num_steps: int


def rederive_updates(
    *,
    config: Config,
    data: FederatedData,
    task: Task,
    instructions: Mapping[str, TrainInstruction],
    device: torch.device,
) -> dict[str, SiteUpdate]:
    """Every instructed site's update, from the site code path the simulation uses.

    Site state (a control variate, a personal model) is not restored: the
    updates are exact for algorithms whose sites keep none (FedAvg, FedProx),
    which :func:`replay_error` confirms.
    """
    sites = configured_sites(
        config=config,
        data=data,
        task=task,
        device=device,
        run_path=None,
        resume_round=None,
        names=set(instructions),
    )
    out: dict[str, SiteUpdate] = {}
    for site in sites:
        instruction = instructions[site.name]
        reply = site.train(instruction)
        if isinstance(reply, ClientError):
            raise ConfigError(f"audit: site '{site.name}' refused to train: {reply.message}")
        delta = (
            dict(reply.params)
            if reply.kind is UpdateKind.DELTA
            else {n: reply.params[n] - instruction.params[n] for n in reply.params}
        )
        out[site.name] = SiteUpdate(
            delta=delta, num_examples=reply.num_examples, num_steps=reply.num_steps
        )
    return out


def replay_error(*, sent: Params, updates: Mapping[str, SiteUpdate], recorded: Params) -> float:
    """Largest gap between ``sent`` plus the updates' weighted mean and ``recorded``.

    Zero (up to float rounding) means the re-derived updates are the ones
    the server aggregated into the recorded model (FedAvg's aggregation).
    """
    total = sum(u.num_examples for u in updates.values())
    worst = 0.0
    for name, value in recorded.items():
        if name not in sent or not all(name in u.delta for u in updates.values()):
            continue
        mean = sum(u.num_examples * np.asarray(u.delta[name], np.float64) for u in updates.values())
        predicted = np.asarray(sent[name], np.float64) + mean / total
        worst = max(worst, float(np.max(np.abs(predicted - value))) if value.size else 0.0)
    return worst
