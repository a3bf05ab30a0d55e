"""Round progress: a rich progress bar on a terminal, one plain line per round otherwise.

:class:`RoundProgress` receives each finished round (the ``progress``
callback of :func:`flmi.simulation.run_experiment` and of ``flmi server``).
On a terminal every arm gets a bar with its rounds done, the current metric,
the time elapsed and the time remaining (the arm's mean round time so far,
times the rounds left). When the output is a file or a pipe (a log, CI) it
prints :func:`round_line` instead, one line per round, so nothing is lost to
cursor movement.
"""

from __future__ import annotations

import math
from datetime import timedelta
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from flmi.core.federation import RoundRecord
from flmi.core.keys import Metric, SegmentationMetric

#: The metrics a round line shows, in this order, where the task reports them.
LINE_METRICS = (
    Metric.AUC,
    Metric.ACCURACY,
    SegmentationMetric.DICE,
    Metric.MAE,
    Metric.C_INDEX,
    Metric.LOSS,
)


def fmt(value: float | None) -> str:
    """A metric with three decimals; ``-`` when absent or NaN."""
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _scores(record: RoundRecord) -> dict[str, float]:
    return dict(record.global_metrics or record.site_mean)


def current_metric(record: RoundRecord) -> str:
    """The round's headline metric, e.g. ``auc 0.812`` (the first of :data:`LINE_METRICS`)."""
    scores = _scores(record)
    for m in LINE_METRICS:
        if m in scores:
            return f"{m.value} {fmt(scores[m])}"
    return ""


def _failed(record: RoundRecord) -> str:
    if not record.sites_failed:
        return ""
    return f"  [red]failed: {escape(', '.join(sorted(record.sites_failed)))}[/red]"


def round_line(record: RoundRecord, rounds: int) -> str:
    """One round as a line of rich markup: arm, round, every line metric, time, failed sites."""
    scores = _scores(record)
    parts = [f"{m.value} {fmt(scores.get(m))}" for m in LINE_METRICS if m in scores]
    return (
        f"[bold]{record.arm:>9}[/bold] round {record.rnd:>3}/{rounds}  "
        + "  ".join(parts)
        + f"  ({record.wall_s:.1f} s){_failed(record)}"
    )


def remaining(wall_s: list[float], *, done: int, rounds: int) -> str:
    """The time left, ``H:MM:SS``: the mean of ``wall_s`` times the rounds after ``done``."""
    if not wall_s:
        return "-:--:--"
    left = max(rounds - done, 0) * sum(wall_s) / len(wall_s)
    return str(timedelta(seconds=round(left)))


class RoundProgress:
    """Shows each finished round; a context manager around a run.

    Parameters
    ----------
    console
        Where to show it. A bar when ``console.is_terminal``, plain lines otherwise.
    """

    def __init__(self, *, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._times: dict[str, list[float]] = {}

    def __enter__(self) -> RoundProgress:
        if self._console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description:>9}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metric]}"),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                TextColumn("remaining {task.fields[eta]}"),
                console=self._console,
                auto_refresh=False,
            )
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, record: RoundRecord, rounds: int) -> None:
        """Show ``record``, round ``record.rnd`` of ``rounds`` of its arm."""
        if self._bar is None:
            self._console.print(round_line(record, rounds), highlight=False)
            return
        times = self._times.setdefault(record.arm, [])
        times.append(record.wall_s)
        metric = current_metric(record)
        eta = remaining(times, done=record.rnd, rounds=rounds)
        task = self._tasks.get(record.arm)
        if task is None:
            task = self._bar.add_task(
                record.arm, total=rounds, completed=record.rnd, metric=metric, eta=eta
            )
            self._tasks[record.arm] = task
        else:
            self._bar.update(task, total=rounds, completed=record.rnd, metric=metric, eta=eta)
        if record.sites_failed:  # above the bars, kept in the scrollback
            self._bar.console.print(round_line(record, rounds), highlight=False)
        self._bar.refresh()
