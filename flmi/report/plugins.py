"""Which plug-in each part of a run came from, recorded in the run and checked on reuse.

``RUN_DIR/plugins.json`` names, for the strategy, task, network, data source
and runtime of the run, the distribution and version that provided it
(``flmi`` for built-in parts), or the Python object a script passed to
:func:`flmi.simulation.run_experiment`. ``--resume`` and ``flmi predict``
read it before anything else, so a run made with a plug-in package that is no
longer installed fails with a message naming that package, not with an
"unknown name".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmi.core.errors import RunDirError
from flmi.data.source_registry import SOURCES
from flmi.registry import BUILTIN, PluginError, Registry
from flmi.runtime.registry import RUNTIMES
from flmi.strategies.registry import STRATEGIES
from flmi.tasks.model_registry import MODELS
from flmi.tasks.registry import TASKS
from flmi.tensorio import atomic_write_json

if TYPE_CHECKING:
    from flmi.config import Config

log = logging.getLogger("flmi.plugins")

PLUGINS = "plugins.json"

#: Each kind of part: its registry.
REGISTRIES: Mapping[str, Registry[Any]] = {
    "strategy": STRATEGIES,
    "task": TASKS,
    "model": MODELS,
    "data_source": SOURCES,
    "runtime": RUNTIMES,
}


def part_names(config: Config) -> dict[str, str]:
    """``{kind: the name the config selects}`` for every kind of part."""
    return {
        "strategy": config.strategy.name,
        "task": config.task.name,
        "model": config.task.model,
        "data_source": config.data.source,
        "runtime": config.runtime.name,
    }


def plugin_record(config: Config, *, objects: Mapping[str, object] | None = None) -> dict[str, Any]:
    """What ``plugins.json`` holds: each part's name and origin.

    Parameters
    ----------
    config
        The run's validated config.
    objects
        ``{kind: object}`` for parts a script passed as objects (``"strategy"``,
        ``"task"``); those are recorded by their class, not by a registry origin.
    """
    given = dict(objects or {})
    out: dict[str, Any] = {}
    for kind, name in part_names(config).items():
        if kind in given:
            cls = type(given[kind])
            out[kind] = {"name": name, "object": f"{cls.__module__}.{cls.__qualname__}"}
        else:
            out[kind] = {"name": name, **REGISTRIES[kind].origin(name).to_json()}
    return out


def write_plugins(run_path: Path, record: Mapping[str, Any]) -> None:
    """Write ``RUN_DIR/plugins.json`` atomically."""
    atomic_write_json(run_path / PLUGINS, dict(record))


def check_plugins(run_path: Path, *, command: str, objects: Set[str] = frozenset()) -> None:
    """Every plug-in the run in ``run_path`` used must be installed again.

    Parameters
    ----------
    run_path
        The run directory (one without ``plugins.json``, from an older flmi, passes).
    command
        What is reusing the run (``"--resume"``, ``"flmi predict"``), for messages.
    objects
        The kinds of part the caller passes as objects again.

    Raises
    ------
    PluginError
        A part came from a distribution that is not installed (the message
        names it and its version), now comes from another distribution, or
        was a Python object the caller does not pass again.
    """
    path = run_path / PLUGINS
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); the run directory is damaged") from None
    problems = [
        problem
        for kind, entry in sorted(record.items())
        if kind in REGISTRIES and isinstance(entry, dict)
        if (problem := _check_entry(kind, entry, command=command, objects=objects)) is not None
    ]
    if problems:
        raise PluginError(f"{command}: " + "; ".join(problems))


def _check_entry(
    kind: str, entry: Mapping[str, Any], *, command: str, objects: Set[str]
) -> str | None:
    """What is wrong with one recorded part (``None``: nothing)."""
    name = str(entry.get("name", ""))
    if "object" in entry:
        if kind not in objects:
            return (
                f"this run's {kind} was the Python object {entry['object']}, passed "
                f"to run_experiment(); pass it again ({kind}=...) from Python to reuse the run"
            )
        return None
    dist, version = str(entry.get("distribution", "")), str(entry.get("version", ""))
    if dist == BUILTIN and not entry.get("entry_point"):
        return None
    registry = REGISTRIES[kind]
    provider = f"the plug-in package '{dist}' {version}".rstrip() if dist else "a script"
    if name not in registry:
        install = (
            f"install it (pip install '{dist}=={version}')"
            if dist and version
            else "register it again before this call"
        )
        return (
            f"this run's {kind} '{name}' came from {provider}, which is not "
            f"installed; {install} and run again"
        )
    now = registry.origin(name)
    if dist and now.distribution != dist:
        return (
            f"this run's {kind} '{name}' came from {provider}, but '{name}' is now "
            f"provided by {now.describe()}; install '{dist}' again or start a new run"
        )
    if version and now.version != version:
        log.warning(
            "%s: %s '%s' came from %s %s; %s is installed now: results may differ",
            command,
            kind,
            name,
            dist,
            version,
            now.version,
        )
    return None
