"""What the sites report about their data before training: data QA and survival curves.

Both run each site's half at the site (:func:`flmi.site.qa.describe_site`,
:func:`flmi.report.km_report.site_km_message`), so only suppressed counts and
count tables reach the server's half, which builds the run's ``data``
section and Kaplan-Meier curves.
"""

from __future__ import annotations

import numpy as np

from flmi.config import Config
from flmi.data.arrays import FederatedData
from flmi.report.heterogeneity import data_section
from flmi.report.km_report import km_section, site_km_message
from flmi.site.qa import LabelKind, describe_site

LABEL_KINDS: dict[str, LabelKind] = {
    "classification": "classes",
    "regression": "histogram",
    "survival": "events",
}
TARGET_BINS = 12  # regression: target histogram over offset +- 3 scales


def describe_sites(config: Config, data: FederatedData) -> dict[str, object]:
    """The ``data`` section: each site's suppressed report, distances and flags."""
    t, r = config.task, config.report
    edges = tuple(
        float(v)
        for v in np.linspace(
            t.target_offset - 3 * t.target_scale,
            t.target_offset + 3 * t.target_scale,
            TARGET_BINS + 1,
        )
    )
    kind = LABEL_KINDS.get(t.name, "none")
    reports = {
        name: describe_site(
            site=name, data=splits, label_kind=kind, min_count=r.min_count, label_edges=edges
        )
        for name, splits in sorted(data.sites.items())
    }
    return data_section(reports, min_count=r.min_count, flag_distance=r.flag_distance)


def survival_curves(config: Config, data: FederatedData) -> dict[str, object]:
    """Per-site and federated Kaplan-Meier curves, built from the sites' count tables."""
    r = config.report
    messages = {
        name: site_km_message(
            site=name, data=splits, bin_width=r.km_bin_width, min_count=r.min_count
        )
        for name, splits in sorted(data.sites.items())
    }
    return km_section(messages, bin_width=r.km_bin_width, min_count=r.min_count)
