"""The default runtime: direct calls into :class:`flmi.site.site.Site` objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from flmi.core.exchange import StageEndpoint, StageReply
from flmi.core.messages import (
    ClientError,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
)


class SiteEndpoint(Protocol):
    """Anything that answers as a site: :class:`flmi.site.site.Site`, or a simulated faulty one."""

    @property
    def name(self) -> str:
        """The site's name."""
        ...

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """Local training."""
        ...

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        """Local evaluation."""
        ...


class InProcessRuntime:
    """Deliver instructions by calling each site in this process, in sorted site order.

    Parameters
    ----------
    sites
        The sites this runtime reaches.
    """

    def __init__(self, *, sites: Sequence[SiteEndpoint]) -> None:
        self._sites = {site.name: site for site in sites}
        if len(self._sites) != len(sites):
            raise ValueError("site names must be unique")

    def site_names(self) -> Sequence[str]:
        """Names of the reachable sites, sorted."""
        return sorted(self._sites)

    def _unknown(self, site: str) -> ClientError:
        return ClientError(site=site, code=ErrorCode.UNAVAILABLE, message=f"no site named '{site}'")

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        """Call each site's :meth:`Site.train`."""
        return {
            name: self._sites[name].train(i) if name in self._sites else self._unknown(name)
            for name, i in sorted(instructions.items())
        }

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        """Call each site's :meth:`Site.evaluate`."""
        return {
            name: self._sites[name].evaluate(i) if name in self._sites else self._unknown(name)
            for name, i in sorted(instructions.items())
        }

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        """Deliver one protocol stage to each named site, in sorted order.

        A site that does not answer protocol stages replies with an
        ``UNAVAILABLE`` error naming the stage.
        """
        replies: dict[str, StageReply] = {}
        for name, payload in sorted(payloads.items()):
            site = self._sites.get(name)
            if site is None:
                replies[name] = self._unknown(name)
            elif not isinstance(site, StageEndpoint):
                replies[name] = ClientError(
                    site=name,
                    code=ErrorCode.UNAVAILABLE,
                    message=f"site '{name}' does not take part in protocol stage '{stage}'",
                )
            else:
                replies[name] = site.exchange(stage=stage, rnd=rnd, payload=bytes(payload))
        return replies
