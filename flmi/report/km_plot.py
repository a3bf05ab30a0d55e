"""The Kaplan-Meier figure of a survival run and its files (``km.json``, ``km.png``).

Kept apart from :mod:`flmi.report.km_report`, which the sites and the
before-training summary use, so that only a survival run imports matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flmi.report.figure_cache import FIGURES, FigureCache
from flmi.report.plots import OTHER_SITES, grey_lines
from flmi.report.site_selection import SITE_LIMIT, select_sites
from flmi.tensorio import atomic_write_bytes, atomic_write_json


def km_figure(section: Mapping[str, object], *, limit: int = SITE_LIMIT) -> Figure:
    """Every site's step curve and the federated one; past ``limit`` sites, most in grey.

    Past the limit, the sites with the lowest and highest survival at their last
    time are named and the others are thin grey steps with one legend entry.
    """
    sites = section["sites"]
    federated = section["federated"]
    assert isinstance(sites, dict) and isinstance(federated, dict)

    def steps(curve: Mapping[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
        """The vertices of the post-step curve: (t0, s0), (t1, s0), (t1, s1), (t2, s1), ..."""
        x, y = np.array([0.0, *curve["time"]]), np.array([1.0, *curve["survival"]])
        return np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]

    last = {n: float(c["survival"][-1]) if c["survival"] else math.nan for n, c in sites.items()}
    selection = select_sites(list(sites), last, basis="survival at the site's last time")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    others = [steps(sites[n]) for n in selection.summarised]
    grey_lines(ax, others)
    if others:
        ax.plot([], [], "-", color=OTHER_SITES, lw=0.6, label=f"{len(others)} other sites")
    for name in selection.shown:
        ax.step(
            [0.0, *sites[name]["time"]],
            [1.0, *sites[name]["survival"]],
            where="post",
            lw=1,
            label=name,
        )
    ax.step(
        [0.0, *federated["time"]],
        [1.0, *federated["survival"]],
        where="post",
        lw=2.5,
        color="black",
        label="federated",
    )
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    title = f"Kaplan-Meier ({section['mode']})"
    if selection.summarising:
        title += f"\nnamed: {len(selection.shown)} of {len(sites)} sites ({selection.basis})"
    ax.set_title(title, fontsize=9)
    return fig


def write_km(path: Path, section: Mapping[str, object]) -> None:
    """Write ``km.json`` and a step plot ``km.png`` into the run directory ``path``.

    The plot is drawn once per distinct ``section`` (kept in ``path/figures``),
    so a resumed run does not draw it again.
    """
    atomic_write_json(path / "km.json", section)
    cache = FigureCache(directory=path / FIGURES)
    png = cache.png("km", inputs=section, draw=lambda: km_figure(section))
    km = path / "km.png"
    if not (km.is_file() and km.read_bytes() == png):
        atomic_write_bytes(km, png)
