"""Per-site figures that cost the same for 20 sites or 2,000: distributions across sites.

Past :data:`flmi.report.site_selection.SITE_LIMIT` sites, the report shows
each per-site quantity as a box plot over the sites with every site a dot
(one artist for all of them) and the sites of a :class:`SiteSelection` named;
the numbers of every site are in the report's tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flmi.report import plots
from flmi.report.site_selection import SITE_LIMIT, SiteSelection, select_sites

SPLITS = ("train", "val", "test")


def primary_arm(summary: Mapping[str, Any]) -> str | None:
    """The arm sites are ranked by: ``federated`` where there is one, else the first by name."""
    arms = sorted(summary.get("arms", {}))
    return "federated" if "federated" in arms else (arms[0] if arms else None)


def report_selection(summary: Mapping[str, Any], *, limit: int = SITE_LIMIT) -> SiteSelection:
    """The sites the report names: by the primary arm's first metric defined at some site."""
    sites = sorted(summary.get("sites", {}))
    arm_name = primary_arm(summary)
    arm = summary["arms"][arm_name] if arm_name else {}
    for metric in plots.METRICS:
        scores = {s: plots.arm_value(arm, s, metric)[0] for s in sites}
        if any(not math.isnan(v) for v in scores.values()):
            basis = f"{arm_name} test {plots.LABELS[metric]} on the site's own test split"
            return select_sites(sites, scores, basis=basis, limit=limit)
    return select_sites(sites, {}, basis="every metric", limit=limit)


def _strip(
    ax: Axes,
    *,
    position: float,
    values: Mapping[str, float],
    selection: SiteSelection,
    colour: str,
    names: bool,
) -> None:
    """One box over ``values``, every site a dot, the selection's sites marked (and named)."""
    defined = {s: v for s, v in sorted(values.items()) if not math.isnan(v)}
    if not defined:
        return
    data = np.array(list(defined.values()))
    ax.boxplot([data], positions=[position], widths=0.5, showfliers=False, manage_ticks=False)
    order = np.argsort(np.argsort(data, kind="stable"), kind="stable")
    offsets = (order / max(1, len(data) - 1) - 0.5) * 0.4  # spread by rank: no randomness
    ax.scatter(position + offsets, data, s=8, color=colour, alpha=0.5, linewidths=0)
    for (site, value), offset in zip(defined.items(), offsets, strict=True):
        if site not in selection.shown:
            continue
        ax.plot([position + offset], [value], "o", ms=5, mfc="none", mec="k")
        if names:
            ax.annotate(
                site,
                (position + offset, value),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=6,
                va="center",
            )


def site_distribution(summary: Mapping[str, Any], selection: SiteSelection) -> Figure:
    """Every final test metric over the sites, per arm: a box, the sites as dots, some named.

    The central test set is a black diamond. Sites are named on the primary arm
    (circled on the others).
    """
    arms = sorted(summary["arms"].items())
    main = primary_arm(summary)
    sites = sorted(summary["sites"])
    fig, axes = plots._grid(len(plots.METRICS), cols=3, width=4.4, height=3.4)
    for ax, metric in zip(axes, plots.METRICS, strict=True):
        for i, (name, arm) in enumerate(arms):
            values = {s: plots.arm_value(arm, s, metric)[0] for s in sites}
            _strip(
                ax,
                position=i,
                values=values,
                selection=selection,
                colour=plots._colour(name),
                names=name == main,
            )
            central, _, _ = plots.arm_value(arm, "central", metric)
            if not math.isnan(central):
                ax.plot([i], [central], "D", color="k", ms=6, label="central test")
        ax.set_xticks(range(len(arms)), [name for name, _ in arms], fontsize=8)
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.set_xlabel("arm (one dot per site's own test split)")
        ax.set_ylabel(plots.axis_label(metric))
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes, extra="circled and named: " + ", ".join(selection.shown))
    fig.suptitle(
        f"Final-round test metrics over {len(sites)} sites (box: quartiles; "
        "per-site numbers and intervals: the confidence-interval table)"
    )
    return fig


def _legend(fig: Figure, axes: Sequence[Axes], *, extra: str) -> None:
    """One legend under the figure: the central marker where drawn, and what is named."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        if h:
            handles, labels = [h[0]], [lab[0]]
            break
    (named,) = axes[0].plot([], [], "o", ms=5, mfc="none", mec="k")
    fig.legend([*handles, named], [*labels, extra], loc="outside lower center", ncols=2, fontsize=7)


def label_count(info: Mapping[str, Any], split: str, label: int) -> int:
    """Examples of class ``label`` in one site's ``split`` (a suppressed count reads 0)."""
    by_split = info.get("label_counts_by_split", {}).get(split)
    if by_split is None and split == "train":
        by_split = info.get("label_counts", {})
    return int((by_split or {}).get(str(label)) or 0)


def label_classes(summary: Mapping[str, Any]) -> list[int]:
    """Every class any site lists, in any split."""
    found: set[int] = set()
    for info in summary["sites"].values():
        by_split = info.get("label_counts_by_split", {})
        for counts in [info.get("label_counts", {}), *(by_split.get(s, {}) for s in SPLITS)]:
            found.update(int(c) for c in counts)
    return sorted(found)


def label_distribution(
    summary: Mapping[str, Any], selection: SiteSelection, *, positive_label: int | None
) -> Figure:
    """Examples of each class per site, per split: a box over the sites, the sites as dots."""
    sites = sorted(summary["sites"])
    classes = label_classes(summary)
    fig, axes = plots._grid(len(SPLITS), cols=3, width=4.5, height=3.4)
    for ax, split in zip(axes, SPLITS, strict=True):
        for i, c in enumerate(classes):
            counts = {s: float(label_count(summary["sites"][s], split, c)) for s in sites}
            _strip(
                ax,
                position=i,
                values=counts,
                selection=selection,
                colour=f"C{i}",
                names=True,
            )
        ax.set_xticks(
            range(len(classes)),
            [f"class {c}" + (" (pos.)" if c == positive_label else "") for c in classes],
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(classes) - 0.4)
        ax.set_xlabel("class (one dot per site)")
        ax.set_ylabel("examples (count)")
        ax.set_title(f"{split} split")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes, extra="circled and named: " + ", ".join(selection.shown))
    fig.suptitle(
        f"Labels over {len(sites)} sites (box: quartiles; every site's counts: the table below; "
        "a count under [report] min_count is suppressed and reads 0)"
    )
    return fig
