"""A site's own persistent state, saved atomically at the site, one file per round."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmi.core.params import Params, copy_params
from flmi.tensorio import load_tensors, save_tensors

STATE_PREFIX = "site_state"
KEEP_STATES = 2
_ROUND_FILE = re.compile(rf"^{STATE_PREFIX}-(\d+)\.safetensors$")


@dataclass(frozen=True)
class SiteState:
    """What a site keeps between rounds and across restarts.

    Algorithms keep their client-side memory here: SCAFFOLD's control variate,
    FedBN's local normalisation layers, Ditto's personal model, later a
    privacy ledger.

    Parameters
    ----------
    tensors
        Named tensors (never sent anywhere by the site code path itself).
    meta
        JSON-ready values; ``meta["round"]`` is the round the state is as of.
    """

    tensors: Params = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def round(self) -> int:
        """The round this state is as of (0 before any)."""
        return int(self.meta.get("round", 0))

    @property
    def holds_nothing(self) -> bool:
        """Whether there is nothing to keep: no tensor and no meta but the round."""
        return not self.tensors and set(self.meta) <= {"round"}

    def save(self, directory: Path) -> None:
        """Write the state atomically as of its round, keeping the last two rounds' files.

        A run resumed after round ``r`` needs the state as of ``r`` even if the
        site had already saved round ``r + 1`` before the crash.
        """
        path = directory / f"{STATE_PREFIX}-{self.round:05d}.safetensors"
        save_tensors(path=path, tensors=self.tensors, meta=self.meta)
        for old in sorted(_round_files(directory))[:-KEEP_STATES]:
            old[1].unlink(missing_ok=True)
            old[1].with_suffix(".json").unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path, *, max_round: int | None = None) -> SiteState:
        """The newest saved state with round <= ``max_round`` (empty if none was saved)."""
        candidates = [
            (rnd, path)
            for rnd, path in _round_files(directory)
            if max_round is None or rnd <= max_round
        ]
        if not candidates:
            return cls()
        _, path = max(candidates)
        tensors, meta = load_tensors(path=path)
        return cls(tensors=copy_params(tensors), meta=meta)


def has_saved_state(directory: Path) -> bool:
    """Whether ``directory`` holds any saved round of a :class:`SiteState`."""
    return bool(_round_files(directory))


def _round_files(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    out = []
    for path in directory.iterdir():
        match = _ROUND_FILE.match(path.name)
        if match and path.with_suffix(".json").exists():
            out.append((int(match.group(1)), path))
    return sorted(out)
