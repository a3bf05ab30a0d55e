"""``RUN_DIR/contributions.json`` and the ``contributions`` section of ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flmi.core.keys import Manifest, Record
from flmi.forensics.contribution import Contributions, ContributionSettings, site_contributions
from flmi.forensics.reader import RecordReader
from flmi.forensics.replay import recorded_strategy
from flmi.forensics.scoring import scorer_for
from flmi.report.summary_schema import read_summary
from flmi.tensorio import atomic_write_json

CONTRIBUTIONS = "contributions.json"


def write_contributions(
    *,
    run_dir: Path,
    metric: str | None = None,
    settings: ContributionSettings | None = None,
    strategy: str | None = None,
    max_examples: int = 0,
) -> dict[str, Any]:
    """Score every site's contribution to the run in ``run_dir`` and write it down.

    The section goes to ``contributions.json`` and, when the run finished,
    into ``summary.json`` (``contributions``), which is returned (the section
    alone when there is no summary yet).

    Parameters
    ----------
    run_dir
        A simulated run with a record (``[record] updates = true``).
    metric
        The validation metric a coalition's model is scored by (default: the task's headline).
    settings
        Method and truncation (default: :class:`ContributionSettings`).
    strategy
        Combine coalitions with this rule instead of the run's own.
    max_examples
        Score on this many validation examples, drawn once (0: all).
    """
    reader = RecordReader(run_dir=run_dir)
    scorer = scorer_for(run_dir, metric=metric, max_examples=max_examples)
    found: Contributions = site_contributions(
        reader,
        recorded_strategy(reader, name=strategy),
        scorer,
        settings=settings or ContributionSettings(),
    )
    section = found.to_json(metric=scorer.metric)
    section[Manifest.STRATEGY] = strategy or reader.strategy
    section[Manifest.VAL_EXAMPLES] = scorer.num_examples
    atomic_write_json(run_dir / CONTRIBUTIONS, section)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return section
    read_summary(summary_path)  # a summary that does not fit the layout is named, not patched
    document: dict[str, Any] = json.loads(summary_path.read_text())
    document[Record.CONTRIBUTIONS] = section
    atomic_write_json(summary_path, document)
    return document
