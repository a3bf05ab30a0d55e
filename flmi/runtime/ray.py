"""Sites hosted by long-lived Ray actors: every core of one machine, or a cluster.

Each actor (a *worker*) owns a fixed set of sites: it loads the data and
builds those sites itself from the run's :class:`SiteRecipe` (the same
:func:`flmi.federated_sites.sites_from_recipe` code the simulation uses), so
no site's data passes through the driver, and it keeps their state between
rounds. It answers through :class:`flmi.runtime.inprocess.InProcessRuntime`,
that is the unchanged :class:`flmi.site.site.Site` code path; the driver runs
the unchanged federation loop. Only instructions and replies (flmi
dataclasses of numpy arrays made by these processes) cross, through Ray's
object store; nothing that came from a network is unpickled.

Sites go to workers in turn over their sorted names; each worker trains one
site at a time. The replies are the same for any number of workers, so the
model is the in-process one bit for bit.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flmi.config import RuntimeConfig
from flmi.core.errors import ConfigError
from flmi.core.exchange import StageReply
from flmi.core.keys import Arm
from flmi.core.messages import (
    ClientError,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
)
from flmi.federated_sites import SiteRecipe, sites_from_recipe
from flmi.report.rundir import RunDir
from flmi.runtime.inprocess import InProcessRuntime
from flmi.site.site import Site
from flmi.site.state import SiteState

INSTALL = "pip install 'flmi[ray]'"


def ray_installed() -> bool:
    """Whether the ``ray`` package can be imported here."""
    return importlib.util.find_spec("ray") is not None


def check_ray(runtime: RuntimeConfig) -> None:
    """Raise :class:`ConfigError` naming the extra when the ``ray`` package is missing."""
    if not ray_installed():
        raise ConfigError(
            f"runtime.name = 'ray' needs the ray package, which is not installed: {INSTALL} "
            "(or set runtime.name = 'inprocess')"
        )


def worker_count(runtime: RuntimeConfig, *, num_sites: int, resources: Mapping[str, float]) -> int:
    """How many workers to start: ``runtime.max_workers``, or what ``resources`` allow.

    Never more than one per site. Raises :class:`ConfigError` when the
    cluster cannot hold one worker, or the ``max_workers`` asked for.
    """
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    fit = int(cpus // runtime.num_cpus_per_site)
    if runtime.num_gpus_per_site > 0:
        fit = min(fit, int(gpus // runtime.num_gpus_per_site))
    have = f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs"
    each = (
        f"runtime.num_cpus_per_site = {runtime.num_cpus_per_site:g} and "
        f"runtime.num_gpus_per_site = {runtime.num_gpus_per_site:g}"
    )
    if fit < 1:
        raise ConfigError(f"one worker needs {each}, but {have}; lower them")
    if runtime.max_workers is not None:
        if runtime.max_workers > fit:
            raise ConfigError(
                f"runtime.max_workers = {runtime.max_workers} workers with {each} need more "
                f"than {have} (room for {fit}); lower runtime.max_workers"
            )
        fit = runtime.max_workers
    return max(1, min(fit, num_sites))


def site_groups(site_names: Sequence[str], *, workers: int) -> list[list[str]]:
    """The sites of each worker: the sorted names dealt out in turn."""
    names = sorted(site_names)
    return [names[i::workers] for i in range(workers) if names[i::workers]]


class SiteHost:
    """One worker's sites, answering through the same delivery code as the simulation.

    Parameters
    ----------
    recipe
        How to build the sites (the worker loads their data itself).
    site_names
        The sites this worker owns.
    """

    def __init__(self, *, recipe: SiteRecipe, site_names: Sequence[str]) -> None:
        self._endpoints = sites_from_recipe(recipe, names=site_names)
        self._sites = InProcessRuntime(sites=self._endpoints)

    def train(self, instructions: Mapping[str, TrainInstruction]) -> dict[str, TrainReply]:
        """Each owned site's :meth:`Site.train`."""
        return dict(self._sites.train(instructions))

    def evaluate(self, instructions: Mapping[str, EvaluateInstruction]) -> dict[str, EvaluateReply]:
        """Each owned site's :meth:`Site.evaluate`."""
        return dict(self._sites.evaluate(instructions))

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> dict[str, StageReply]:
        """One protocol stage for each owned site."""
        return dict(self._sites.exchange(stage=stage, rnd=rnd, payloads=payloads))

    def site_states(self) -> dict[str, SiteState]:
        """The state each owned site holds now (sites behind a fault or protocol: left out)."""
        return {e.name: e.state for e in self._endpoints if isinstance(e, Site)}

    def info(self) -> tuple[int, str]:
        """This worker's process id and Ray node id."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class WorkerInfo:
    """Where one worker runs and which sites it owns."""

    pid: int
    node_id: str
    sites: tuple[str, ...]


class RayRuntime:
    """Deliver instructions to the Ray workers that own the sites; all workers at once.

    Build it with :meth:`start`; :meth:`close` stops the workers, and the
    local Ray instance when :meth:`start` started one.
    """

    def __init__(
        self,
        *,
        hosts: Sequence[Any],
        groups: Sequence[Sequence[str]],
        owns_ray: bool,
        recipe: SiteRecipe,
    ):
        self._hosts, self._owns_ray, self._recipe = list(hosts), owns_ray, recipe
        self._groups = [tuple(g) for g in groups]
        self._owner = {site: i for i, group in enumerate(groups) for site in group}
        self._closed = False

    @classmethod
    def start(cls, *, recipe: SiteRecipe, site_names: Sequence[str]) -> RayRuntime:
        """Connect to Ray (or start a local instance), then start the workers and their sites.

        With ``runtime.address`` unset a local instance is started for this
        run, unless this process is already connected to Ray (then that
        connection is used and left open).
        """
        import ray

        config = recipe.config
        if config.privacy.aggregation == "he":
            raise ConfigError(
                "runtime.name = 'ray' does not run privacy.aggregation = 'he' yet (its sites "
                "share one simulated consortium); use runtime.name = 'inprocess'"
            )
        r = config.runtime
        owns_ray = _connect(r)
        hosts: list[Any] = []
        try:
            groups = site_groups(
                site_names,
                workers=worker_count(r, num_sites=len(site_names), resources=_resources()),
            )
            hosts.extend(_start_host(recipe, group) for group in groups)
            ray.get([host.info.remote() for host in hosts])  # the sites are built
        except BaseException:
            _stop(hosts, owns_ray=owns_ray)
            raise
        return cls(hosts=hosts, groups=groups, owns_ray=owns_ray, recipe=recipe)

    def site_names(self) -> Sequence[str]:
        """Names of the reachable sites, sorted."""
        return sorted(self._owner)

    def site_states(self) -> dict[str, SiteState]:
        """Each site's state as its worker holds it now (see :meth:`SiteHost.site_states`)."""
        import ray

        states: dict[str, SiteState] = {}
        for part in ray.get([host.site_states.remote() for host in self._hosts]):
            states.update(part)
        return dict(sorted(states.items()))

    def workers(self) -> list[WorkerInfo]:
        """Each worker's process id, node id and sites."""
        import ray

        infos = ray.get([host.info.remote() for host in self._hosts])
        return [
            WorkerInfo(pid=pid, node_id=node, sites=group)
            for (pid, node), group in zip(infos, self._groups, strict=True)
        ]

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        """Each site's :meth:`Site.train`, in its worker."""
        return self._ask(instructions, lambda host, part: host.train.remote(part))

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        """Each site's :meth:`Site.evaluate`, in its worker."""
        return self._ask(instructions, lambda host, part: host.evaluate.remote(part))

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        """Deliver one protocol stage to each named site, in its worker."""
        return self._ask(
            payloads,
            lambda host, part: host.exchange.remote(stage=stage, rnd=rnd, payloads=part),
        )

    def _ask(
        self, messages: Mapping[str, Any], send: Callable[[Any, dict[str, Any]], Any]
    ) -> dict[str, Any]:
        """Send each worker its sites' messages at once; a worker that died fails its sites."""
        import ray
        from ray.exceptions import RayActorError

        parts: dict[int, dict[str, Any]] = {}
        replies: dict[str, Any] = {}
        for name, message in sorted(messages.items()):
            if name in self._owner:
                parts.setdefault(self._owner[name], {})[name] = message
            else:
                replies[name] = ClientError(
                    site=name, code=ErrorCode.UNAVAILABLE, message=f"no site named '{name}'"
                )
        pending = {i: send(self._hosts[i], part) for i, part in parts.items()}
        for i, future in pending.items():
            try:
                replies.update(ray.get(future))
            except RayActorError:
                for name in parts[i]:
                    replies[name] = ClientError(
                        site=name,
                        code=ErrorCode.UNAVAILABLE,
                        message=f"the worker hosting site '{name}' stopped",
                    )
                self._restart(i)
        return dict(sorted(replies.items()))

    def _restart(self, index: int) -> None:
        """Replace worker ``index``, which stopped, by a new one with the same sites.

        Its sites read their state back as of the run's last checkpointed
        round (what the federation's strategy state is as of), so a site
        that had saved the unfinished round's state before its worker died
        starts from the checkpoint instead. Without a run directory the sites
        start again from empty state. The new worker builds its sites while
        the round goes on; a worker that cannot start fails its sites again
        next time it is asked.
        """
        import ray

        ray.kill(self._hosts[index])
        recipe = replace(self._recipe, resume_round=_last_checkpoint(self._recipe.run_path))
        self._hosts[index] = _start_host(recipe, self._groups[index])

    def close(self) -> None:
        """Stop the workers, and Ray itself when :meth:`start` started it."""
        if not self._closed:
            self._closed = True
            _stop(self._hosts, owns_ray=self._owns_ray)


def _start_host(recipe: SiteRecipe, group: Sequence[str]) -> Any:
    """Start one worker that builds and hosts the sites ``group``."""
    import ray

    r = recipe.config.runtime
    host_class: Any = ray.remote(SiteHost)
    return host_class.options(num_cpus=r.num_cpus_per_site, num_gpus=r.num_gpus_per_site).remote(
        recipe=recipe, site_names=list(group)
    )


def _last_checkpoint(run_path: Path | None) -> int | None:
    """The federated arm's last checkpointed round in ``run_path`` (``None``: none yet)."""
    if run_path is None:
        return None
    latest = RunDir(path=run_path).latest_checkpoint(arm=Arm.FEDERATED)
    return latest[0] if latest is not None else None


def _connect(runtime: RuntimeConfig) -> bool:
    """Connect this process to Ray; whether this call did (and so must disconnect)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if runtime.address is None:
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=runtime.address)
    return True


def _resources() -> dict[str, float]:
    """The connected cluster's total resources (``CPU``, ``GPU``, ...)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return resources


def _stop(hosts: Sequence[Any], *, owns_ray: bool) -> None:
    """Kill the workers; disconnect (and stop a local instance) when this run connected."""
    import ray

    for host in hosts:
        ray.kill(host)
    if owns_ray:
        ray.shutdown()
