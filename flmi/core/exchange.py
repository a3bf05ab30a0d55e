"""Staged exchanges: the server relays opaque bytes between sites, stage by stage.

Secure aggregation and homomorphic aggregation are protocols, not transforms
on updates: after local training each site holds its update back, and the
server then drives a few *stages* (advertise keys, share secrets, send masked
inputs, unmask, ...). In every stage the server sends each named site one
opaque payload tagged with the stage name and the round, and collects one
opaque reply (or a :class:`ClientError`) from each. The server never needs to
read what it relays between sites; it reads only the replies addressed to it.

A runtime that can carry stages implements :class:`StagedExchange` (the
in-process runtime calls each site; a network runtime sends one message per
site). The federation loop hands it to a :class:`SecureAggregation`, which
returns a :class:`SecureRound`: one update equivalent, for the strategy's
linear rule, to the sites' individual updates, and nothing about any one site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from flmi.core.messages import ClientError, ClientUpdate, TrainReply
from flmi.core.params import Params

StageReply = bytes | ClientError


@runtime_checkable
class StagedExchange(Protocol):
    """Carries one stage of a protocol: an opaque payload to each site, one reply back."""

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        """Deliver ``payloads[site]`` to each site for ``stage`` of round ``rnd``.

        Parameters
        ----------
        stage
            The stage name (for example ``"secagg/share"``); the site routes on it.
        rnd
            The round the stage belongs to; a site ignores a stage of another round.
        payloads
            One opaque payload per site.

        Returns
        -------
        Mapping[str, bytes | ClientError]
            Each addressed site's reply, or its failure (a dropout is a
            :class:`ClientError`, never an exception).
        """
        ...


@runtime_checkable
class StageEndpoint(Protocol):
    """A site that answers protocol stages (the site side of :class:`StagedExchange`)."""

    def exchange(self, *, stage: str, rnd: int, payload: bytes) -> StageReply:
        """Answer one stage; a refusal is a :class:`ClientError`."""
        ...


@dataclass(frozen=True)
class SecureRound:
    """What a secure aggregation round gave the server.

    Parameters
    ----------
    update
        One update equivalent to the contributors' updates under the
        strategy's linear rule (``None`` when the round was refused, for
        example with fewer survivors than the threshold).
    contributors
        How many sites' updates the aggregate holds (the count, not who).
    errors
        Sites that failed or dropped out, with the reason.
    bytes_down, bytes_up
        Payload bytes the server sent and received in the protocol stages.
    """

    update: ClientUpdate | None
    contributors: int
    errors: Mapping[str, ClientError] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0


class SecureAggregation(Protocol):
    """The server side of a secure aggregation protocol (secure sum or HE)."""

    @property
    def name(self) -> str:
        """The ``privacy.aggregation`` value this protocol implements."""
        ...

    def aggregate(
        self,
        *,
        rnd: int,
        exchange: StagedExchange,
        replies: Mapping[str, TrainReply],
        reference: Params,
    ) -> SecureRound:
        """Run this round's stages with the sites that trained and recover the aggregate.

        Parameters
        ----------
        rnd
            The round.
        exchange
            Carries the stages to the sites.
        replies
            The training replies: sites that hold an update back answered with
            an update without tensors; the others with an error.
        reference
            The global weights the sites started from (the schema of the result).
        """
        ...


def held_back(update: ClientUpdate) -> bool:
    """Whether ``update`` only says that its site holds its update back for a protocol."""
    return not update.params and not update.extras and update.num_examples == 0
