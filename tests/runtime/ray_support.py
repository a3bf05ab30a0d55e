"""Tiny federations and process lists for the Ray runtime's tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch

from flmi.data.arrays import ArraySplit
from flmi.tasks.base import FitHooks, FitResult, LocalTraining
from flmi.tasks.classification import ClassificationTask
from tests.conftest import tiny_tables


def ray_tables(**sections: dict[str, Any]) -> dict[str, Any]:
    """Three generated hospitals, two short rounds, no bootstrap: seconds per run."""
    tables = tiny_tables(
        data={"source": "synthetic", "image_size": 16, "n_patients": 150},
        partition={"method": "natural", "num_sites": 3, "min_examples_per_site": 5},
        federation={"rounds": 2, "local_steps": 2, "batch_size": 8},
        report={"bootstrap_resamples": 0},
    )
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    return tables


def _stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, state letter)`` of ``pid``, or ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, by pid, with its command line."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[1] != "Z":
            parents[int(entry)] = stat[0]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except (FileNotFoundError, ProcessLookupError):
                    continue
                found[pid] = cmd.decode(errors="replace")
                frontier.append(pid)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has stopped running)."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


class KillOnceTask(ClassificationTask):
    """Generated-image classification whose worker kills itself (``SIGKILL``) once, mid-round.

    The first :meth:`fit` that finds ``marker`` removes it and sends ``SIGKILL``
    to its own process: a real ``kill -9`` of the worker while it trains its
    sites. Removing the file first makes it happen once, in one worker.
    """

    def __init__(self, *, marker: Path) -> None:
        super().__init__(num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4)
        self.marker = marker

    def fit(
        self,
        *,
        model: torch.nn.Module,
        data: ArraySplit,
        training: LocalTraining,
        generator: torch.Generator,
        device: torch.device,
        hooks: FitHooks | None = None,
    ) -> FitResult:
        """Die here if the marker was set; else train as the classification task does."""
        try:
            self.marker.unlink()
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(
            model=model,
            data=data,
            training=training,
            generator=generator,
            device=device,
            hooks=hooks,
        )
