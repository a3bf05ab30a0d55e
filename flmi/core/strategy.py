"""The server-side algorithm interface.

A strategy keeps no hidden state: everything it needs between rounds lives in
the state object it returns, which the federation loop passes back in and
checkpoints through :meth:`Strategy.state_to_record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from flmi.core.messages import ClientUpdate, TrainInstruction
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


@runtime_checkable
class Personalised(Protocol):
    """A strategy whose sites keep some tensors local (FedBN's normalisation layers, ...).

    For such a strategy the loop accepts updates that leave those tensors out,
    asks each site to score its own personalised model, and computes no
    central-test metrics (there is no single model to score).
    """

    @property
    def personalised(self) -> bool:
        """Whether sites keep tensors local under this strategy."""
        ...


@runtime_checkable
class SiteModels(Protocol):
    """A strategy that keeps one model per site or group (IFCA's clusters).

    Each site is scored with the model :meth:`site_params` names for it.
    """

    def site_params(self, state: Any, site: str) -> Params:
        """The weights ``site`` should be scored with under ``state``."""
        ...


@runtime_checkable
class EvaluationSettings(Protocol):
    """A strategy whose sites do some local work before scoring (fine-tuning)."""

    @property
    def evaluation_hparams(self) -> Mapping[str, JSONValue]:
        """Settings every :class:`EvaluateInstruction` carries."""
        ...


@runtime_checkable
class PrivacyReporting(Protocol):
    """A strategy that accounts for differential privacy (a DP wrapper).

    The loop writes :meth:`privacy_record` into every round's record, so
    epsilon is reported round by round.
    """

    def privacy_record(self, state: Any) -> Mapping[str, JSONValue]:
        """Epsilon so far, overall and per site, and the settings it was spent at."""
        ...


@runtime_checkable
class SecureRoundAccounting(Protocol):
    """A strategy that accounts for a round whose updates it only receives summed.

    Under secure or homomorphic aggregation the strategy receives one update
    equivalent to the sites' sum. Before handing it over, the loop calls
    :meth:`note_secure_round` with what the server holds in the clear: each
    site's training metrics (aggregate numbers such as a DP-SGD report, never
    an update) and the names of the sites whose update is in the sum.
    """

    def note_secure_round(
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
