"""Optional experiment trackers: every round's metrics to TensorBoard and to an MLflow file store.

Both are off by default and switched on in ``[runtime]`` (``tensorboard = true``,
``mlflow = true``); both write under the run directory (``tensorboard/`` and
``mlruns/``) and need the ``trackers`` extra (``pip install 'flmi[trackers]'``).
A tracker logs exactly the numbers of ``metrics.jsonl``, under the tags of
:func:`round_scalars`, with the round as the step.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from flmi.core.errors import ConfigError
from flmi.core.federation import RoundRecord
from flmi.core.keys import Record

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
MLFLOW_EXPERIMENT = "flmi"
EXTRA = "pip install 'flmi[trackers]'"

# MLflow accepts at most this many params per log_batch call.
MLFLOW_BATCH_PARAMS = 100


def round_scalars(line: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of one ``metrics.jsonl`` line, as ``{tag: value}``.

    Tags are ``ARM/global/METRIC``, ``ARM/site_mean/METRIC``, ``ARM/val/METRIC``,
    ``ARM/per_site/SITE/METRIC``, and ``ARM/wall_s``, ``ARM/bytes_down``,
    ``ARM/bytes_up``.
    """
    arm = str(line[Record.ARM])
    out: dict[str, float] = {}
    groups: list[tuple[str, Mapping[str, Any] | None]] = [
        (Record.GLOBAL, line.get(Record.GLOBAL)),
        (Record.SITE_MEAN, line.get(Record.SITE_MEAN)),
        (Record.VAL, line.get(Record.VAL)),
    ]
    groups += [
        (f"{Record.PER_SITE}/{site}", m)
        for site, m in sorted((line.get(Record.PER_SITE) or {}).items())
    ]
    for group, metrics in groups:
        for name, value in sorted((metrics or {}).items()):
            if value is not None and math.isfinite(float(value)):
                out[f"{arm}/{group}/{name}"] = float(value)
    for key in (Record.WALL_S, Record.BYTES_DOWN, Record.BYTES_UP):
        if line.get(key) is not None:
            out[f"{arm}/{key}"] = float(line[key])
    return out


class Tracker(Protocol):
    """Receives every round's record."""

    def log_round(self, record: RoundRecord) -> None:
        """Log one round of one arm."""
        ...

    def close(self) -> None:
        """Flush and release the tracker's files."""
        ...


class TensorBoardTracker:
    """Scalars in ``RUN_DIR/tensorboard/`` (TensorBoard event files), one step per round.

    Parameters
    ----------
    log_dir
        The folder for the event files.
    """

    def __init__(self, *, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log_round(self, record: RoundRecord) -> None:
        """Write each of the round's numbers as a scalar at step = round."""
        for tag, value in round_scalars(record.to_json()).items():
            self._writer.add_scalar(tag, value, global_step=record.rnd)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


@contextlib.contextmanager
def file_store_allowed() -> Iterator[None]:
    """Let MLflow open a file store (in maintenance mode since MLflow 3), for this block only."""
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def open_file_store(root: Path) -> Any:
    """MLflow's file store in ``root`` (also how a reader opens it again)."""
    from mlflow.store.tracking.file_store import FileStore

    with file_store_allowed():
        return FileStore(root_directory=root.resolve().as_uri())  # type: ignore[no-untyped-call]


class MLflowTracker:
    """One MLflow run in a local file store, ``RUN_DIR/mlruns/``; metrics at step = round.

    Parameters
    ----------
    root
        The file store's folder.
    run_name
        The MLflow run's name (the run directory's name).
    params
        Settings to record with the run (the config, flattened).
    """

    def __init__(self, *, root: Path, run_name: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        self._store = open_file_store(root)
        experiment = self._store.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._store.create_experiment(MLFLOW_EXPERIMENT)
        )
        run = self._store.create_run(
            experiment_id=experiment_id,
            user_id="flmi",
            start_time=int(time.time() * 1000),
            tags=[],
            run_name=run_name,
        )
        self.run_id: str = run.info.run_id
        every = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(every), MLFLOW_BATCH_PARAMS):  # MLflow caps a batch
            self._store.log_batch(
                self.run_id,
                metrics=[],
                params=every[start : start + MLFLOW_BATCH_PARAMS],
                tags=[],
            )

    def log_round(self, record: RoundRecord) -> None:
        """Log each of the round's numbers at step = round."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(tag, value, now, record.rnd)
            for tag, value in round_scalars(record.to_json()).items()
        ]
        self._store.log_batch(self.run_id, metrics=metrics, params=[], tags=[])

    def close(self) -> None:
        """Mark the MLflow run finished."""
        from mlflow.entities import RunStatus

        self._store.update_run_info(
            self.run_id,
            run_status=RunStatus.FINISHED,
            end_time=int(time.time() * 1000),
            run_name=None,
        )


def check_trackers(*, tensorboard: bool, mlflow: bool) -> None:
    """Fail before anything is written if a tracker switched on cannot be imported."""
    if tensorboard:
        try:
            import tensorboard as _tb  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"runtime.tensorboard = true needs the tensorboard package: {EXTRA}, "
                "or set runtime.tensorboard = false"
            ) from None
    if mlflow:
        try:
            from mlflow.store.tracking.file_store import FileStore  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"runtime.mlflow = true needs the mlflow-skinny package: {EXTRA}, "
                "or set runtime.mlflow = false"
            ) from None


def flat_params(tables: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"federation.lr": "0.01", ...}`` for MLflow's params."""
    out: dict[str, str] = {}
    for key, value in tables.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def open_trackers(
    *, run_dir: Path, tensorboard: bool, mlflow: bool, config: Mapping[str, Any]
) -> list[Tracker]:
    """The trackers switched on, writing under ``run_dir``."""
    check_trackers(tensorboard=tensorboard, mlflow=mlflow)
    trackers: list[Tracker] = []
    if tensorboard:
        trackers.append(TensorBoardTracker(log_dir=run_dir / TENSORBOARD_DIR))
    if mlflow:
        trackers.append(
            MLflowTracker(
                root=run_dir / MLFLOW_DIR, run_name=run_dir.name, params=flat_params(config)
            )
        )
    return trackers


def close_all(trackers: Sequence[Tracker]) -> None:
    """Close every tracker."""
    for tracker in trackers:
        tracker.close()
