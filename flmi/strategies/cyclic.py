"""Cyclic weight transfer (institutional incremental learning)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, add_scaled, check_same_schema, copy_params
from flmi.core.rng import generator
from flmi.core.strategy import StateRecord
from flmi.strategies.options import help_field


@dataclass(frozen=True)
class CyclicOptions:
    """``[strategy]`` keys of ``cyclic``."""

    deterministic_cycle: bool = help_field(
        False, "visit sites in sorted order every cycle instead of a seeded shuffle"
    )


@dataclass(frozen=True)
class CyclicState:
    """The model being passed from site to site."""

    params: Params


class Cyclic:
    """The model visits one site per round, in turn, and is never averaged.

    Chang et al., "Distributed deep learning networks among institutions for
    medical imaging", JAMIA 2018 (cyclical weight transfer); Sheller et al.,
    "Multi-institutional deep learning modeling without sharing patient data",
    MICCAI BrainLes 2018 (institutional incremental learning). Round ``r``
    trains at position ``(r - 1) mod N`` of the current cycle of the ``N``
    sampled sites; each cycle's order is a seeded permutation of the sites
    (or their sorted order with ``deterministic_cycle``), drawn from the round
    number alone, so a resumed run visits the same sites.

    Parameters
    ----------
    hparams
        Local-training settings sent to the visited site.
    seed
        Seed of the cycle orders.
    deterministic_cycle
        Visit the sites in sorted order every cycle instead of reshuffling.
    """

    def __init__(
        self, *, hparams: Mapping[str, HParamValue], seed: int, deterministic_cycle: bool
    ) -> None:
        self._hparams = dict(hparams)
        self._seed = seed
        self._deterministic = deterministic_cycle

    @property
    def name(self) -> str:
        """The config name, ``"cyclic"``."""
        return "cyclic"

    def init(self, params: Params) -> CyclicState:
        """Start from a private copy of the initial weights."""
        return CyclicState(params=copy_params(params))

    def visited_site(self, rnd: int, sites: Sequence[str]) -> str:
        """The site that trains in round ``rnd``."""
        ordered = sorted(sites)
        cycle, position = divmod(rnd - 1, len(ordered))
        if self._deterministic:
            return ordered[position]
        rng = generator(seed=self._seed, party="server", rnd=cycle, purpose="cycle")
        return ordered[int(rng.permutation(len(ordered))[position])]

    def configure(
        self, rnd: int, state: CyclicState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """One instruction, for this round's site."""
        if not sites:
            return {}
        site = self.visited_site(rnd, sites)
        return {site: TrainInstruction(rnd=rnd, params=state.params, hparams=self._hparams)}

    def aggregate(
        self, rnd: int, state: CyclicState, updates: Sequence[ClientUpdate]
    ) -> tuple[CyclicState, Params]:
        """The visited site's model becomes the model."""
        if len(updates) != 1:
            raise ValueError(f"round {rnd}: cyclic training expects one update, got {len(updates)}")
        update = updates[0]
        check_same_schema(
            expected=state.params, actual=update.params, where=f"update from site '{update.site}'"
        )
        new = (
            copy_params(update.params)
            if update.kind == UpdateKind.FULL
            else add_scaled(state.params, update.params, 1.0)
        )
        return CyclicState(params=new), new

    def state_to_record(self, state: CyclicState) -> StateRecord:
        """The model alone: the cycle position follows from the round number."""
        return StateRecord(tensors=state.params)

    def state_from_record(self, record: StateRecord) -> CyclicState:
        """Rebuild from the model."""
        return CyclicState(params=copy_params(record.tensors))
