"""The runtimes ``[runtime] name`` can select: what moves messages between the loop and the sites.

:data:`RUNTIMES` is a :class:`flmi.registry.Registry` of :class:`RuntimeSpec`.
flmi registers ``inprocess`` (direct calls, in sorted site order) exactly as a
plug-in registers its own (entry-point group ``flmi.runtimes``; see
``docs/extending.md``).

A runtime plug-in implements one factory, :attr:`RuntimeSpec.build`: given
the simulated sites (each answers ``train`` and ``evaluate``, and protocol
stages when secure aggregation runs), it returns an object with the
:class:`flmi.core.federation.Runtime` methods ``site_names()``,
``train(instructions)`` and ``evaluate(instructions)`` (and ``exchange`` for
secure aggregation, as :class:`flmi.runtime.inprocess.InProcessRuntime`
has). It must deliver every instruction to the named site and return every
reply, a failure as a :class:`flmi.core.messages.ClientError`; it runs no
algorithm, so the same seeds give the same numbers on every runtime.

A runtime whose workers host the sites in other processes (``ray``)
implements :attr:`RuntimeSpec.build_hosted` instead: given a
:class:`flmi.federated_sites.SiteRecipe` and the site names, its workers
build their own sites, and the run calls ``close()`` when it is done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flmi.core.federation import Runtime
from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check
from flmi.runtime.inprocess import InProcessRuntime

if TYPE_CHECKING:
    from flmi.config import RuntimeConfig
    from flmi.core.exchange import StageReply
    from flmi.federated_sites import SiteRecipe
    from flmi.runtime.inprocess import SiteEndpoint


class RuntimeFactory(Protocol):
    """Builds a runtime that reaches ``sites``."""

    def __call__(self, *, sites: Sequence[SiteEndpoint]) -> Runtime:
        """A runtime delivering instructions to ``sites`` (unique names)."""
        ...


class HostedRuntime(Runtime, Protocol):
    """A runtime whose workers host the sites; it carries protocol stages and must be closed."""

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        """Deliver one protocol stage to each named site."""
        ...

    def close(self) -> None:
        """Stop the workers (and whatever this runtime started for them)."""
        ...


class HostedRuntimeFactory(Protocol):
    """Builds a runtime whose workers build the sites ``site_names`` from ``recipe``."""

    def __call__(self, *, recipe: SiteRecipe, site_names: Sequence[str]) -> HostedRuntime:
        """A runtime reaching ``site_names``, each built by the worker that owns it."""
        ...


def _no_sites(*, sites: Sequence[SiteEndpoint]) -> Runtime:
    raise TypeError("this runtime's workers build their own sites; call build_hosted")


@dataclass(frozen=True)
class RuntimeSpec:
    """A selectable runtime.

    Parameters
    ----------
    summary
        One line: how it moves messages.
    build
        The factory: ``build(sites=...)`` returns the runtime.
    build_hosted
        For a runtime whose workers host the sites: used instead of ``build``.
    check
        Raises :class:`flmi.core.errors.ConfigError` when the runtime cannot
        run with these ``[runtime]`` settings here (a missing extra), before
        anything is written.
    """

    summary: str
    build: RuntimeFactory = _no_sites
    build_hosted: HostedRuntimeFactory | None = None
    check: Callable[[RuntimeConfig], None] | None = None


RUNTIMES: Registry[RuntimeSpec] = Registry(
    kind="runtime",
    group="flmi.runtimes",
    field="runtime.name",
    check=instance_check("runtime", RuntimeSpec),
)


def _inprocess(*, sites: Sequence[SiteEndpoint]) -> Runtime:
    return InProcessRuntime(sites=sites)


RUNTIMES.register(
    "inprocess",
    RuntimeSpec(summary="direct calls into each site, in sorted site order", build=_inprocess),
    origin=BUILTIN_ORIGIN,
)


def _ray_hosted(*, recipe: SiteRecipe, site_names: Sequence[str]) -> HostedRuntime:
    from flmi.runtime.ray import RayRuntime

    return RayRuntime.start(recipe=recipe, site_names=site_names)


def _ray_check(runtime: RuntimeConfig) -> None:
    from flmi.runtime.ray import check_ray

    check_ray(runtime)


RUNTIMES.register(
    "ray",
    RuntimeSpec(
        summary="Ray actors, each hosting a fixed set of sites (the ray extra)",
        build_hosted=_ray_hosted,
        check=_ray_check,
    ),
    origin=BUILTIN_ORIGIN,
)
