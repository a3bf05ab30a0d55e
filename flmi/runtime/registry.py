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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check
from flmi.runtime.inprocess import InProcessRuntime

if TYPE_CHECKING:
    from flmi.core.federation import Runtime
    from flmi.runtime.inprocess import SiteEndpoint


class RuntimeFactory(Protocol):
    """Builds a runtime that reaches ``sites``."""

    def __call__(self, *, sites: Sequence[SiteEndpoint]) -> Runtime:
        """A runtime delivering instructions to ``sites`` (unique names)."""
        ...


@dataclass(frozen=True)
class RuntimeSpec:
    """A selectable runtime.

    Parameters
    ----------
    summary
        One line: how it moves messages.
    build
        The factory: ``build(sites=...)`` returns the runtime.
    """

    summary: str
    build: RuntimeFactory


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
