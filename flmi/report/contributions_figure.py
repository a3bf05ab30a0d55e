"""The report's contribution section: each site's Shapley and leave-one-out value as bars."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from flmi.core.keys import Manifest, Record
from flmi.report import plots

#: The report section's key (its HTML id).
SECTION = "contributions"


def contribution_bars(section: Mapping[str, Any]) -> Figure:
    """Horizontal bars: each site's Shapley value and leave-one-out value, best site on top."""
    sites = [str(s) for s in section[Manifest.RANKING]]
    shapley = [float(section[Manifest.SITES][s][Manifest.SHAPLEY]) for s in sites]
    loo = [float(section[Manifest.SITES][s][Manifest.LEAVE_ONE_OUT]) for s in sites]
    fig = Figure(figsize=(6.0, 0.5 * len(sites) + 1.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(sites))[::-1]
    ax.barh(y + 0.2, shapley, height=0.4, label="Shapley value", color="tab:blue")
    ax.barh(y - 0.2, loo, height=0.4, label="leave-one-out", color="tab:gray")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, sites)
    ax.set_xlabel(f"contribution to the validation {section[Manifest.METRIC]} (summed over rounds)")
    ax.set_ylabel("site")
    ax.legend(loc="best")
    return fig


def contribution_section(summary: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The section for ``summary``'s ``contributions``, or nothing when it has none."""
    section = summary.get(Record.CONTRIBUTIONS)
    if not section:
        return {}
    image = base64.b64encode(plots.png(contribution_bars(section))).decode("ascii")
    caption = (
        f"Each site's contribution, from the recorded updates re-aggregated coalition by "
        f"coalition, round by round ({section[Manifest.METHOD]}; "
        f"{len(section[Manifest.ROUNDS_SCORED])} rounds scored, "
        f"{len(section[Manifest.ROUNDS_TRUNCATED])} skipped for moving the score too little). "
        "A negative value: the model scored better without the site's updates."
    )
    body = (
        f"<img alt='site contributions' src='data:image/png;base64,{image}'>"
        f"<p class='note'>{html.escape(caption)}</p>"
    )
    return {SECTION: ("Site contributions", body)}
