"""Kaplan-Meier curves of a survival run: per site and federated, from count tables only.

Each site turns all its patients (train, validation and test) into a
:class:`flmi.tasks.km.KMTable`; only the table's JSON bytes reach the server,
which parses them and multiplies out one curve per site and one for the
federation. ``km.json`` in the run directory holds them; ``km.png`` plots them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from flmi.data.arrays import SiteSplits
from flmi.tasks.km import KMTable, combine_km, km_curve_json, km_table
from flmi.tensorio import atomic_write_json


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


def write_km(path: Path, section: Mapping[str, object]) -> None:
    """Write ``km.json`` and a step plot ``km.png`` into the run directory ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_json(path / "km.json", section)
    sites = section["sites"]
    federated = section["federated"]
    assert isinstance(sites, dict) and isinstance(federated, dict)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in sorted(sites.items()):
        ax.step([0.0, *curve["time"]], [1.0, *curve["survival"]], where="post", lw=1, label=name)
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
    ax.set_title(f"Kaplan-Meier ({section['mode']})")
    fig.tight_layout()
    fig.savefig(path / "km.png", dpi=100)
    plt.close(fig)
