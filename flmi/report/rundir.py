"""The run directory: everything needed to read, reproduce and resume a run.

Layout::

    RUN_DIR/config.toml          the validated config, as run
    RUN_DIR/metrics.jsonl        one line per round and arm
    RUN_DIR/summary.json         final-round numbers per arm, sites, seed, versions
    RUN_DIR/curves.json          final-round score histograms, ROC, calibration, threshold
    RUN_DIR/model.safetensors    the final federated model (+ model.json sidecar)
    RUN_DIR/checkpoints/         the last rounds' global weights and strategy state

Nothing is pickled. Every file is written atomically or appended line by line,
so a crash never leaves a half-written record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from flmi.core.errors import RunDirError
from flmi.core.federation import RoundRecord
from flmi.core.params import Params, schema_hash
from flmi.core.strategy import StateRecord
from flmi.report.summary_schema import Summary
from flmi.tensorio import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.safetensors"
CURVES = "curves.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
KEEP_CHECKPOINTS = 2


class RunDir:
    """A run directory that refuses to overwrite an earlier run.

    Parameters
    ----------
    path
        The folder; it must be absent or empty.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, *, path: Path) -> RunDir:
        """Create ``path``, refusing one that already holds files."""
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} exists and is not a folder; choose another --out")
        if path.is_dir() and any(path.iterdir()):
            raise RunDirError(
                f"--out {path} already holds files; choose an empty or new folder "
                "so nothing is lost"
            )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path=path)

    @classmethod
    def open_for_resume(cls, *, path: Path) -> RunDir:
        """An existing run directory that holds a config snapshot and a checkpoint."""
        if not (path / CONFIG).is_file():
            raise RunDirError(
                f"--resume: {path} holds no {CONFIG}; point --out at the run to resume"
            )
        return cls(path=path)

    def read_config(self) -> dict[str, Any]:
        """The config snapshot's tables."""
        import tomllib

        return tomllib.loads((self.path / CONFIG).read_text())

    def latest_checkpoint(self, *, arm: str) -> tuple[int, Params, StateRecord] | None:
        """The last checkpointed round of ``arm``, its weights and strategy state (or None)."""
        pointer = self.path / CHECKPOINTS / f"{arm}-{LATEST}"
        if not pointer.is_file():
            return None
        latest = json.loads(pointer.read_text())
        return self._read_checkpoint(self.path / CHECKPOINTS / str(latest["file"]))

    def checkpoint(self, *, arm: str, rnd: int) -> tuple[int, Params, StateRecord] | None:
        """Round ``rnd``'s checkpoint of ``arm`` (``None``: not kept; only the last few are)."""
        path = self.path / CHECKPOINTS / f"{arm}-round-{rnd:05d}.safetensors"
        return self._read_checkpoint(path) if path.is_file() else None

    @staticmethod
    def _read_checkpoint(path: Path) -> tuple[int, Params, StateRecord]:
        tensors, meta = load_tensors(path=path)
        params = {k[len("params/") :]: v for k, v in tensors.items() if k.startswith("params/")}
        state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
        return int(meta["round"]), params, StateRecord(tensors=state, meta=meta["strategy_meta"])

    def metrics_lines(self) -> list[dict[str, Any]]:
        """Every line of ``metrics.jsonl`` (none if the file does not exist yet)."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def keep_metrics(self, *, arm: str, up_to_round: int) -> None:
        """Rewrite ``metrics.jsonl`` atomically with ``arm``'s lines up to a round, and no others.

        Used on resume: lines written after the last checkpoint, and every
        baseline line (baselines are rerun), are dropped, so the history has
        no gap and no duplicate.
        """
        kept = [
            line
            for line in self.metrics_lines()
            if line["arm"] == arm and int(line["round"]) <= up_to_round
        ]
        text = "".join(json.dumps(line, sort_keys=True, allow_nan=False) + "\n" for line in kept)
        atomic_write_bytes(self.path / METRICS, text.encode())

    def site_dir(self, site: str) -> Path:
        """Where a simulated site keeps its state (a real site keeps it at the hospital)."""
        return self.path / "sites" / site

    def write_config(self, tables: Mapping[str, Any]) -> None:
        """Snapshot the validated config."""
        atomic_write_bytes(self.path / CONFIG, tomli_w.dumps(dict(tables)).encode())

    def append_metrics(self, record: RoundRecord) -> None:
        """Append one round's line to ``metrics.jsonl`` and flush it to disk."""
        line = json.dumps(record.to_json(), sort_keys=True, allow_nan=False) + "\n"
        with (self.path / METRICS).open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def write_checkpoint(
        self, *, rnd: int, arm: str, params: Params, state: StateRecord, strategy: str
    ) -> None:
        """Save round ``rnd``'s weights and strategy state, then point ``latest.json`` at it."""
        folder = self.path / CHECKPOINTS
        name = f"{arm}-round-{rnd:05d}.safetensors"
        tensors = {f"params/{k}": v for k, v in params.items()}
        tensors.update({f"state/{k}": v for k, v in state.tensors.items()})
        meta = {
            "round": rnd,
            "arm": arm,
            "strategy": strategy,
            "strategy_meta": dict(state.meta),
            "schema_sha256": schema_hash(params),
        }
        save_tensors(path=folder / name, tensors=tensors, meta=meta)
        atomic_write_json(folder / f"{arm}-{LATEST}", {"round": rnd, "file": name})
        stale = sorted(folder.glob(f"{arm}-round-*.safetensors"))[:-KEEP_CHECKPOINTS]
        for old in stale:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

    def write_model(self, *, params: Params, meta: Mapping[str, Any]) -> None:
        """Save the final model and its sidecar."""
        save_tensors(
            path=self.path / MODEL,
            tensors=params,
            meta={**meta, "schema_sha256": schema_hash(params)},
        )

    def write_curves(self, curves: Mapping[str, Any]) -> None:
        """Write ``curves.json``: histogram counts and what they give (never a patient's score)."""
        text = json.dumps(curves, sort_keys=True, separators=(",", ":"), allow_nan=False)
        atomic_write_bytes(self.path / CURVES, (text + "\n").encode())

    def write_summary(self, summary: Summary) -> None:
        """Write ``summary.json`` (NaN is not JSON: callers pass ``None`` instead)."""
        atomic_write_json(self.path / SUMMARY, summary.to_json())
