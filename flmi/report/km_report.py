"""Kaplan-Meier curves of a survival run: per site and federated, from count tables only.

Each site turns all its patients (train, validation and test) into a
:class:`flmi.tasks.km.KMTable`; only the table's JSON bytes reach the server,
which parses them and multiplies out one curve per site and one for the
federation. ``km.json`` in the run directory holds them; ``km.png`` plots them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flmi.data.arrays import SiteSplits
from flmi.report.site_selection import SITE_LIMIT, select_sites
from flmi.tasks.km import KMTable, combine_km, km_curve_json, km_table
from flmi.tensorio import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:  # matplotlib loads only when a survival run draws its curves
    from matplotlib.figure import Figure


def site_km_message(*, site: str, data: SiteSplits, bin_width: float, min_count: int) -> bytes:
    """What one site sends: its count table as JSON bytes (runs at the site)."""
    targets = np.concatenate([data.train.y, data.val.y, data.test.y])
    table = km_table(
        site=site,
        time=targets[:, 1],
        event=targets[:, 0],
        bin_width=bin_width,
        min_count=min_count,
    )
    return table.to_wire()


def km_section(
    messages: Mapping[str, bytes], *, bin_width: float, min_count: int
) -> dict[str, object]:
    """The server's curves from the sites' messages: ``{"mode", ..., "sites", "federated"}``."""
    tables = {site: KMTable.from_wire(payload) for site, payload in sorted(messages.items())}
    return {
        "mode": "binned" if bin_width > 0 else "exact",
        "bin_width": bin_width,
        "min_count": min_count if bin_width > 0 else None,
        "sites": {s: km_curve_json(combine_km([t])) for s, t in tables.items()},
        "federated": km_curve_json(combine_km(list(tables.values()))),
    }


def km_figure(section: Mapping[str, object], *, limit: int = SITE_LIMIT) -> Figure:
    """Every site's step curve and the federated one; past ``limit`` sites, most in grey.

    Past the limit, the sites with the lowest and highest survival at their last
    time are named and the others are thin grey steps with one legend entry.
    """
    from matplotlib.figure import Figure

    from flmi.report.plots import OTHER_SITES, grey_lines

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
    from flmi.report.figure_cache import FIGURES, FigureCache

    atomic_write_json(path / "km.json", section)
    cache = FigureCache(directory=path / FIGURES)
    png = cache.png("km", inputs=section, draw=lambda: km_figure(section))
    km = path / "km.png"
    if not (km.is_file() and km.read_bytes() == png):
        atomic_write_bytes(km, png)
