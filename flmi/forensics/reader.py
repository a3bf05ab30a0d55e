"""Reading the record back: each round as the strategy aggregated it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flmi.core.errors import RunDirError
from flmi.core.keys import Manifest
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.forensics.record import FORMAT, INDEX, ROUNDS, manifest_path
from flmi.forensics.store import RECORD, BlobStore


@dataclass(frozen=True)
class RecordedRound:
    """One round as recorded: where the strategy started, what it got, what it gave.

    Parameters
    ----------
    rnd
        The round.
    strategy
        The strategy's name.
    state_before
        The strategy's state before the round's aggregation.
    updates
        The valid updates it aggregated, sorted by site.
    params
        The global model after the round.
    """

    rnd: int
    strategy: str
    state_before: StateRecord
    updates: tuple[ClientUpdate, ...]
    params: Params

    @property
    def sites(self) -> list[str]:
        """The sites whose updates the round aggregated, sorted."""
        return [u.site for u in self.updates]


class RecordReader:
    """The record of a run directory.

    Parameters
    ----------
    run_dir
        A run directory written with ``[record] updates = true``.

    Raises
    ------
    RunDirError
        ``run_dir`` holds no record, or one of a newer layout.
    """

    def __init__(self, *, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.root = run_dir / RECORD
        index = self.root / INDEX
        if not index.is_file():
            raise RunDirError(
                f"{run_dir} holds no record ({index} is missing); run with "
                "`[record] updates = true` (or --set record.updates=true) to keep one"
            )
        self._index = json.loads(index.read_text())
        if int(self._index[Manifest.FORMAT]) > FORMAT:
            raise RunDirError(
                f"{index}: record format {self._index[Manifest.FORMAT]} is newer than this "
                "flmi reads; read it with the flmi that wrote it"
            )
        self._blobs = BlobStore(root=self.root)

    @property
    def strategy(self) -> str:
        """The name of the strategy the run aggregated with."""
        return str(self._index[Manifest.STRATEGY])

    @property
    def sites(self) -> list[str]:
        """Every site of the federation, sorted."""
        return [str(s) for s in self._index[Manifest.SITES]]

    def rounds(self) -> list[int]:
        """The recorded rounds after round 0, in order."""
        found = sorted(int(p.stem.split("-")[1]) for p in (self.root / ROUNDS).glob("round-*.json"))
        return [r for r in found if r > 0]

    def _manifest(self, rnd: int) -> dict[str, Any]:
        path = manifest_path(self.root, rnd)
        if not path.is_file():
            known = self.rounds()
            span = f"rounds {known[0]}..{known[-1]}" if known else "no round"
            raise RunDirError(
                f"the record of {self.run_dir} holds no round {rnd} ({span} recorded)"
            )
        manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest

    def global_params(self, rnd: int) -> Params:
        """The global model after round ``rnd`` (0: before round 1)."""
        return self._blobs.get(str(self._manifest(rnd)[Manifest.GLOBAL]))

    def read(self, rnd: int) -> RecordedRound:
        """Round ``rnd`` as recorded, every blob checked against its hash."""
        m = self._manifest(rnd)
        updates = tuple(self._update(entry) for entry in m[Manifest.UPDATES])
        return RecordedRound(
            rnd=rnd,
            strategy=str(m[Manifest.STRATEGY]),
            state_before=StateRecord(
                tensors=self._blobs.get(str(m[Manifest.STATE])), meta=m[Manifest.STATE_META]
            ),
            updates=updates,
            params=self._blobs.get(str(m[Manifest.GLOBAL])),
        )

    def manifest(self, rnd: int) -> dict[str, Any]:
        """Round ``rnd``'s manifest as written."""
        return self._manifest(rnd)

    def _update(self, entry: dict[str, Any]) -> ClientUpdate:
        extras = entry.get(Manifest.EXTRAS_SHA256)
        return ClientUpdate(
            site=str(entry[Manifest.SITE]),
            params=self._blobs.get(str(entry[Manifest.SHA256])),
            kind=UpdateKind(entry[Manifest.KIND]),
            num_examples=int(entry[Manifest.NUM_EXAMPLES]),
            num_steps=int(entry[Manifest.NUM_STEPS]),
            metrics={
                k: float("nan") if v is None else float(v)
                for k, v in entry[Manifest.METRICS].items()
            },
            extras=self._blobs.get(str(extras)) if extras else {},
        )
