"""Kaplan-Meier curves of a survival run: per site and federated, from count tables only.

Each site turns all its patients (train, validation and test) into a
:class:`flmi.tasks.km.KMTable`; only the table's JSON bytes reach the server,
which parses them and multiplies out one curve per site and one for the
federation. ``km.json`` in the run directory holds them; ``km.png`` plots them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flmi.data.arrays import SiteSplits
from flmi.tasks.km import KMTable, combine_km, km_curve_json, km_table


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
