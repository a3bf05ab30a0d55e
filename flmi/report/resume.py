"""Opening a run directory: a new run, or an interrupted one to resume."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flmi.config import Config, config_from_dict
from flmi.core.errors import ConfigError, RunDirError
from flmi.core.federation import ResumePoint, RoundRecord
from flmi.core.keys import Arm
from flmi.report.plugins import check_plugins, plugin_record, write_plugins
from flmi.report.rundir import RunDir


def open_run(
    *,
    config: Config,
    out: Path | None,
    resume: bool,
    plugins: Mapping[str, Any] | None = None,
) -> tuple[RunDir | None, ResumePoint | None]:
    """Create the run directory, or reopen it to resume after its last checkpoint.

    ``plugins`` is what ``plugins.json`` records (default: every part's
    registry origin, :func:`flmi.report.plugins.plugin_record`); a resume
    first checks that every plug-in the run used is installed.
    """
    record = plugins if plugins is not None else plugin_record(config)
    if out is None:
        if resume:
            raise RunDirError("--resume needs --out: the run directory to continue")
        return None, None
    if not resume:
        run = RunDir.create(path=out)
        run.write_config(config.to_dict())
        write_plugins(run.path, record)
        return run, None
    run = RunDir.open_for_resume(path=out)
    objects = {kind for kind, entry in record.items() if "object" in entry}
    check_plugins(out, command="--resume", objects=objects)
    snapshot = config_from_dict(run.read_config())
    if snapshot != config:
        theirs, ours = snapshot.to_dict(), config.to_dict()
        differing = sorted(
            f"{table}.{key}"
            for table in set(theirs) | set(ours)
            for key in set(theirs.get(table, {})) | set(ours.get(table, {}))
            if theirs.get(table, {}).get(key) != ours.get(table, {}).get(key)
        )
        raise ConfigError(
            f"--resume: the config differs from the run's snapshot at {', '.join(differing)}; "
            f"resume with {out / 'config.toml'} or start a new run"
        )
    checkpoint = run.latest_checkpoint(arm=Arm.FEDERATED)
    if checkpoint is None:
        run.keep_metrics(arm=Arm.FEDERATED, up_to_round=0)
        return run, None
    completed, params, state = checkpoint
    run.keep_metrics(arm=Arm.FEDERATED, up_to_round=completed)
    return run, ResumePoint(completed_round=completed, params=params, state=state)


def record_from_line(line: Mapping[str, Any]) -> RoundRecord:
    """A round record read back from ``metrics.jsonl`` (null metrics become NaN)."""

    def metrics(values: Mapping[str, float | None] | None) -> dict[str, float]:
        return {k: float("nan") if v is None else float(v) for k, v in (values or {}).items()}

    return RoundRecord(
        rnd=int(line["round"]),
        arm=str(line["arm"]),
        global_metrics=metrics(line["global"]) if line["global"] is not None else None,
        per_site={s: metrics(m) for s, m in line["per_site"].items()},
        site_mean=metrics(line["site_mean"]),
        val=metrics(line["val"]),
        wall_s=float(line["wall_s"]),
        bytes_down=int(line["bytes_down"]),
        bytes_up=int(line["bytes_up"]),
        sites_sampled=list(line["sites_sampled"]),
        sites_failed=dict(line["sites_failed"]),
        strategy=dict(line.get("strategy", {})),
        privacy=dict(line.get("privacy", {})),
    )
