"""Writing the record: every round's global model, each site's update and a manifest.

Layout of ``RUN_DIR/record``::

    record.json               format, strategy, the federation's sites
    blobs/<sha256>.safetensors  tensors, named by the hash of their bytes
    rounds/round-00000.json   the global model before round 1
    rounds/round-RRRRR.json   round R: the strategy's state before it, each
                              site's update (hash, kind, example count, weight,
                              metrics) and the global model after it

A manifest is written after the blobs it names, atomically, so a crash never
leaves a manifest pointing at nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flmi.core.keys import Arm, Manifest
from flmi.core.messages import ClientUpdate
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.forensics.store import RECORD, BlobStore
from flmi.tensorio import atomic_write_json

#: Version of the record's layout.
FORMAT = 1
ROUNDS = "rounds"
INDEX = "record.json"


def manifest_path(root: Path, rnd: int) -> Path:
    """Where round ``rnd``'s manifest lives in the record folder ``root``."""
    return root / ROUNDS / f"round-{rnd:05d}.json"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class UpdateRecorder:
    """Keeps each aggregated round of one run in ``run_dir/record``.

    Parameters
    ----------
    run_dir
        The run directory.
    strategy
        The name of the strategy that aggregates (written in every manifest).
    """

    def __init__(self, *, run_dir: Path, strategy: str) -> None:
        self.root = run_dir / RECORD
        self._blobs = BlobStore(root=self.root)
        self._strategy = strategy

    def start(self, *, sites: Sequence[str], initial: Params | None, after_round: int) -> None:
        """Begin (or continue after ``after_round``) the record of a run over ``sites``.

        Manifests of rounds after ``after_round`` (left by a run that stopped
        before checkpointing them) are removed; they are written again as
        those rounds rerun. ``initial`` is the global model before round 1
        (``None`` when resuming).
        """
        atomic_write_json(
            self.root / INDEX,
            {
                Manifest.FORMAT: FORMAT,
                Manifest.STRATEGY: self._strategy,
                Manifest.SITES: sorted(sites),
            },
        )
        for stale in sorted((self.root / ROUNDS).glob("round-*.json")):
            if int(stale.stem.split("-")[1]) > after_round:
                stale.unlink()
        if initial is not None:
            atomic_write_json(
                manifest_path(self.root, 0),
                {
                    Manifest.FORMAT: FORMAT,
                    Manifest.ROUND: 0,
                    Manifest.STRATEGY: self._strategy,
                    Manifest.GLOBAL: self._blobs.put(initial),
                },
            )

    def on_aggregate(
        self,
        rnd: int,
        *,
        state_before: StateRecord,
        updates: Sequence[ClientUpdate],
        params: Params,
    ) -> None:
        """Store round ``rnd``'s updates, starting state and new global model, then its manifest."""
        total = float(sum(u.num_examples for u in updates))
        entries = [self._update_entry(u, total) for u in sorted(updates, key=lambda u: u.site)]
        manifest: dict[str, Any] = {
            Manifest.FORMAT: FORMAT,
            Manifest.ROUND: rnd,
            Manifest.ARM: Arm.FEDERATED.value,
            Manifest.STRATEGY: self._strategy,
            Manifest.STATE: self._blobs.put(state_before.tensors),
            Manifest.STATE_META: dict(state_before.meta),
            Manifest.UPDATES: entries,
            Manifest.GLOBAL: self._blobs.put(params),
        }
        atomic_write_json(manifest_path(self.root, rnd), manifest)

    def _update_entry(self, update: ClientUpdate, total: float) -> dict[str, Any]:
        return {
            Manifest.SITE: update.site,
            Manifest.SHA256: self._blobs.put(update.params),
            Manifest.EXTRAS_SHA256: self._blobs.put(update.extras) if update.extras else None,
            Manifest.KIND: update.kind.value,
            Manifest.NUM_EXAMPLES: update.num_examples,
            Manifest.NUM_STEPS: update.num_steps,
            # The example share: the weight every weighted mean gives the site.
            Manifest.WEIGHT: update.num_examples / total,
            Manifest.METRICS: {k: _finite(v) for k, v in sorted(update.metrics.items())},
        }


def open_recorder(
    *,
    enabled: bool,
    run_dir: Path | None,
    strategy: str,
    sites: Sequence[str],
    initial: Params,
    resumed_after: int | None,
) -> UpdateRecorder | None:
    """The run's recorder under ``[record] updates = true`` (``None``: nothing is recorded).

    Parameters
    ----------
    enabled
        ``record.updates``.
    run_dir
        The run directory (``None``: a run that writes nothing records nothing).
    strategy
        The aggregating strategy's name.
    sites
        Every site of the federation.
    initial
        The global model before round 1.
    resumed_after
        The round a resumed run continues after (``None``: a new run).
    """
    if not enabled or run_dir is None:
        return None
    recorder = UpdateRecorder(run_dir=run_dir, strategy=strategy)
    recorder.start(
        sites=sites,
        initial=initial if resumed_after is None else None,
        after_round=resumed_after or 0,
    )
    return recorder
