"""The server-side algorithm interface.

A strategy keeps no hidden state: everything it needs between rounds lives in
the state object it returns, which the federation loop passes back in and
checkpoints through :meth:`Strategy.state_to_record`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction
from flmi.core.params import Params

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


@dataclass(frozen=True)
class StateRecord:
    """A strategy state as tensors plus JSON-ready values, for checkpoints."""

    tensors: Params
    meta: Mapping[str, JSONValue] = field(default_factory=dict)


S = TypeVar("S")


class Strategy(Protocol[S]):
    """A federated algorithm's server side.

    ``configure`` says what each sampled site should do this round;
    ``aggregate`` turns the updates that arrived into new server state and new
    global weights. Neither runs site code, and sites never run these.
    """

    @property
    def name(self) -> str:
        """The name the config selects this strategy by."""
        ...

    def init(self, params: Params) -> S:
        """Server state before round 1, from the initial global weights."""
        ...

    def configure(self, rnd: int, state: S, sites: Sequence[str]) -> Mapping[str, TrainInstruction]:
        """One instruction per sampled site, keyed by site name."""
        ...

    def aggregate(self, rnd: int, state: S, updates: Sequence[ClientUpdate]) -> tuple[S, Params]:
        """New server state and new global weights from this round's valid updates."""
        ...

    def state_to_record(self, state: S) -> StateRecord:
        """The state as tensors and JSON values (for a checkpoint)."""
        ...

    def state_from_record(self, record: StateRecord) -> S:
        """Rebuild the state written by :meth:`state_to_record`."""
        ...


class SecureRoundNote(Protocol):
    """Accounts for a round whose updates the strategy only receives summed.

    Under secure or homomorphic aggregation the strategy receives one update
    equivalent to the sites' sum. Before handing it over, the loop calls this
    with what the server holds in the clear: each site's training metrics
    (aggregate numbers such as a DP-SGD report, never an update) and the names
    of the sites whose update is in the sum.
    """

    def __call__(
        self,
        rnd: int,
        state: Any,
        *,
        reports: Mapping[str, Mapping[str, float]],
        contributors: Sequence[str],
    ) -> Any:
        """The state with this round's contributions accounted for.

        Parameters
        ----------
        rnd
            The round.
        state
            The strategy's state before :meth:`Strategy.aggregate` of this round.
        reports
            Each contributing site's training metrics.
        contributors
            The sites whose updates the aggregate holds.
        """
        ...


#: ``(state, site) -> weights``: the model ``site`` is scored with under ``state``.
SiteParams = Callable[[Any, str], Params]
#: ``state -> record``: epsilon so far, overall and per site, and the settings it was spent at.
PrivacyRecord = Callable[[Any], Mapping[str, JSONValue]]


@dataclass(frozen=True)
class Capabilities:
    """What a strategy offers beyond the :class:`Strategy` protocol, declared, never guessed.

    A strategy declares its capabilities with a ``capabilities`` property
    (see :class:`DeclaresCapabilities`); the federation loop reads them through
    :func:`capabilities_of` alone. A wrapper passes on the capabilities of the
    strategy it wraps and declares on top of them what it adds (a DP wrapper
    adds privacy reporting), so wrapping never hides a capability.

    Parameters
    ----------
    personalised
        Sites keep some tensors local or a model of their own (FedBN's
        normalisation layers, Ditto's personal model): the loop accepts updates
        that leave the local tensors out, asks each site to score its own
        personalised model, and computes no central-test metrics (there is no
        single model to score).
    site_params
        One model per site or group (IFCA's clusters, FedNorm's branches): each
        site is scored with ``site_params(state, site)``.
    evaluation_hparams
        Settings every :class:`~flmi.core.messages.EvaluateInstruction`
        carries, for sites that do some local work before scoring (fine-tuning).
    privacy_record
        The strategy accounts for differential privacy: ``privacy_record(state)``
        goes into every round's record, so epsilon is reported round by round.
    note_secure_round
        The strategy accounts for a round whose updates it only receives summed
        (see :class:`SecureRoundNote`).
    """

    personalised: bool = False
    site_params: SiteParams | None = None
    evaluation_hparams: Mapping[str, HParamValue] = field(default_factory=dict)
    privacy_record: PrivacyRecord | None = None
    note_secure_round: SecureRoundNote | None = None

    @property
    def declared(self) -> frozenset[str]:
        """The names of the capabilities set (for comparing two strategies' capabilities)."""
        present = {
            "personalised": self.personalised,
            "site_params": self.site_params is not None,
            "evaluation_hparams": bool(self.evaluation_hparams),
            "privacy_record": self.privacy_record is not None,
            "note_secure_round": self.note_secure_round is not None,
        }
        return frozenset(name for name, there in present.items() if there)

    @property
    def one_global_model(self) -> bool:
        """Whether every site is scored with the global model as it is."""
        return not (self.personalised or self.site_params is not None or self.evaluation_hparams)


#: The capabilities of a strategy that declares none: the core protocol only.
NO_CAPABILITIES = Capabilities()


@runtime_checkable
class DeclaresCapabilities(Protocol):
    """A strategy that declares :class:`Capabilities` beyond the core protocol."""

    @property
    def capabilities(self) -> Capabilities:
        """What the strategy offers beyond the core protocol."""
        ...


def capabilities_of(strategy: object) -> Capabilities:
    """The capabilities ``strategy`` declares (:data:`NO_CAPABILITIES` if it declares none).

    The one place anything asks what a strategy can do: a strategy declares
    it, a wrapper passes on what it wraps.

    Raises
    ------
    TypeError
        ``strategy.capabilities`` is not a :class:`Capabilities`.
    """
    if not isinstance(strategy, DeclaresCapabilities):
        return NO_CAPABILITIES
    declared = strategy.capabilities
    if not isinstance(declared, Capabilities):
        raise TypeError(
            f"{type(strategy).__name__}.capabilities must be a flmi.core.strategy.Capabilities, "
            f"got {type(declared).__name__}"
        )
    return declared
