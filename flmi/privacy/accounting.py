"""Privacy accounting through Opacus's accountants: never a hand-written one.

A :class:`Ledger` is one party's history of noisy steps, as Opacus's
accountants keep it: ``(noise_multiplier, sample_rate, steps)`` entries.
Epsilon is always computed by an Opacus accountant from that history, so the
ledger can be saved as JSON (a site's state, a strategy checkpoint) and
resumed without changing the accounting.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ACCOUNTANTS = ("rdp", "prv")

Step = tuple[float, float, int]


def _accountant(name: str) -> Any:
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "rdp":
        return RDPAccountant()
    if name == "prv":
        return PRVAccountant()
    raise ValueError(f"privacy.accountant must be one of {list(ACCOUNTANTS)}, got '{name}'")


@dataclass(frozen=True)
class Ledger:
    """One party's noisy steps, in order; consecutive equal entries are merged.

    Parameters
    ----------
    history
        ``(noise_multiplier, sample_rate, steps)`` entries, oldest first.
    """

    history: tuple[Step, ...] = ()

    def add(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> Ledger:
        """The ledger after ``steps`` more steps at ``noise_multiplier`` and ``sample_rate``."""
        if steps < 0:
            raise ValueError(f"steps must not be negative, got {steps}")
        if steps == 0:
            return self
        entry = (float(noise_multiplier), float(sample_rate))
        if self.history and self.history[-1][:2] == entry:
            last = self.history[-1]
            return Ledger(history=(*self.history[:-1], (*entry, last[2] + steps)))
        return Ledger(history=(*self.history, (*entry, steps)))

    @property
    def steps(self) -> int:
        """Noisy steps taken so far."""
        return sum(n for _, _, n in self.history)

    def epsilon(self, *, delta: float, accountant: str) -> float:
        """Epsilon spent so far at ``delta``, by Opacus's ``accountant`` (0 before any step)."""
        return _epsilon(self.history, delta, accountant)

    def to_json(self) -> list[list[float | int]]:
        """The history as JSON-ready lists."""
        return [[z, q, n] for z, q, n in self.history]

    @classmethod
    def from_json(cls, value: Sequence[Sequence[float | int]]) -> Ledger:
        """Rebuild a ledger written by :meth:`to_json`."""
        history: list[Step] = []
        for entry in value:
            if len(entry) != 3:
                raise ValueError(f"ledger entry {list(entry)!r} is not [z, q, steps]")
            z, q, n = entry
            history.append((float(z), float(q), int(n)))
        return cls(history=tuple(history))


@functools.lru_cache(maxsize=4096)
def _epsilon(history: tuple[Step, ...], delta: float, accountant: str) -> float:
    """Opacus's epsilon for one history (cached: ledgers are asked every round)."""
    if not history:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(z, q, n) for z, q, n in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's advice on its alpha grid, at every call
        return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=256)
def noise_for_epsilon(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The noise multiplier Opacus finds to spend ``target_epsilon`` after ``steps`` steps."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


def json_epsilon(value: float) -> float | None:
    """Epsilon for JSON: rounded, and ``None`` where it is infinite."""
    return round(value, 6) if math.isfinite(value) else None
