"""A site's own persistent state, saved atomically at the site."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmi.core.params import Params, copy_params
from flmi.tensorio import load_tensors, save_tensors

STATE_FILE = "site_state.safetensors"


@dataclass(frozen=True)
class SiteState:
    """What a site keeps between rounds and across restarts.

    Algorithms keep their client-side memory here: SCAFFOLD's control variate,
    FedBN's local normalisation layers, a personal model, a privacy ledger.

    Parameters
    ----------
    tensors
        Named tensors (never sent anywhere by the site code path itself).
    meta
        JSON-ready values, for example the last round the site trained.
    """

    tensors: Params = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        """Write the state atomically to ``directory``."""
        save_tensors(path=directory / STATE_FILE, tensors=self.tensors, meta=self.meta)

    @classmethod
    def load(cls, directory: Path) -> SiteState:
        """Read the state from ``directory``, or an empty state if none was saved yet."""
        path = directory / STATE_FILE
        if not path.exists():
            return cls()
        tensors, meta = load_tensors(path=path)
        return cls(tensors=copy_params(tensors), meta=meta)
