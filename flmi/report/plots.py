"""The run report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function takes what the run directory holds (``metrics.jsonl`` lines,
``summary.json``, ``curves.json``) and returns a matplotlib ``Figure``;
:func:`png` turns one into PNG bytes. Every plot has labelled axes with units
and a legend (a colour bar for the confusion matrix).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flmi.core.keys import Metric
from flmi.report.figure_cache import DPI, render_png

METRICS = (
    Metric.AUC,
    Metric.BALANCED_ACCURACY,
    Metric.ACCURACY,
    Metric.SENSITIVITY,
    Metric.SPECIFICITY,
    Metric.LOSS,
)
LABELS = {
    Metric.AUC: "ROC AUC",
    Metric.BALANCED_ACCURACY: "balanced accuracy",
    Metric.ACCURACY: "accuracy",
    Metric.SENSITIVITY: "sensitivity",
    Metric.SPECIFICITY: "specificity",
    Metric.LOSS: "loss",
}
UNITS = {Metric.LOSS: "cross-entropy, nats"}
ARM_COLOURS = {"federated": "tab:blue", "pooled": "tab:orange", "local": "tab:green"}
OTHER_SITES = "0.6"  # grey: sites drawn together, unnamed


def axis_label(metric: str) -> str:
    """``"ROC AUC (fraction, 0-1)"``: the metric's name and unit."""
    return f"{LABELS.get(Metric(metric), metric)} ({UNITS.get(Metric(metric), 'fraction, 0-1')})"


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    return render_png(fig, dpi=DPI)


def _grid(n: int, *, cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _shared_legend(fig: Figure, ax: Axes, *, columns: int) -> None:
    """One legend for every panel, under the figure (the panels share their lines)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=8)


def _colour(arm: str) -> str:
    return ARM_COLOURS.get(arm, "tab:gray")


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def metric_curves(lines: Sequence[Mapping[str, Any]]) -> Figure:
    """Each metric against the round, one line per arm: test (solid) and validation (dashed).

    The test line is the central test set where there is one, else the
    example-weighted mean over the sites' own test splits.
    """
    arms = sorted({str(line["arm"]) for line in lines})
    fig, axes = _grid(len(METRICS), cols=3, width=4.2, height=3.2)
    for ax, metric in zip(axes, METRICS, strict=True):
        for arm in arms:
            rows = sorted(
                (r for r in lines if r["arm"] == arm and (r["global"] or r["site_mean"])),
                key=lambda r: int(r["round"]),
            )  # rounds without evaluation ([federation] eval_every > 1) are left out
            central = all(r["global"] for r in rows)
            where = "central test" if central else "site-mean test"
            test = [_num((r["global"] if central else r["site_mean"]).get(metric)) for r in rows]
            val = [_num((r["val"] or {}).get(metric)) for r in rows]
            rounds = [int(r["round"]) for r in rows]
            ax.plot(rounds, test, "-o", ms=3, color=_colour(arm), label=f"{arm} ({where})")
            if not all(math.isnan(v) for v in val):
                ax.plot(rounds, val, "--", color=_colour(arm), alpha=0.7, label=f"{arm} (val)")
        ax.set_xlabel("round (number)")
        ax.set_ylabel(axis_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes[0], columns=2 * len(arms))
    fig.suptitle("Metrics per round")
    return fig


def arm_value(arm: Mapping[str, Any], where: str, metric: str) -> tuple[float, float, float]:
    """A metric's value and its interval on one test set (``"central"`` or a site)."""
    ci = arm.get("ci") or {}
    if where == "central":
        value = (arm.get("global") or {}).get(metric)
        interval = (ci.get("global") or {}).get(metric)
    else:
        value = (arm.get("per_site") or {}).get(where, {}).get(metric)
        interval = ((ci.get("per_site") or {}).get(where) or {}).get(metric)
    low, high = interval if interval else (None, None)
    return _num(value), _num(low), _num(high)


def site_bars(summary: Mapping[str, Any]) -> Figure:
    """Every final test metric per site (and central), one bar per arm with its 95 % interval."""
    arms = summary["arms"]
    sites = sorted(summary["sites"])
    places = ["central", *sites]
    fig, axes = _grid(len(METRICS), cols=2, width=6.5, height=3.2)
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(places))
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, (name, arm) in enumerate(sorted(arms.items())):
            values = [arm_value(arm, p, metric) for p in places]
            shown = [j for j, (v, _, _) in enumerate(values) if not math.isnan(v)]
            heights = np.array([values[j][0] for j in shown])
            low = np.array([values[j][0] - values[j][1] for j in shown])
            high = np.array([values[j][2] - values[j][0] for j in shown])
            ax.bar(
                x[shown] + (i - (len(arms) - 1) / 2) * width,
                heights,
                width,
                yerr=np.nan_to_num(np.vstack([low, high])).clip(min=0.0),
                capsize=2,
                color=_colour(name),
                label=name,
            )
        ax.set_xticks(x, places, rotation=20, fontsize=8)
        ax.set_xlabel("test set (central or the site's own)")
        ax.set_ylabel(axis_label(metric))
        ax.grid(axis="y", alpha=0.3)
    _shared_legend(fig, axes[0], columns=len(arms))
    fig.suptitle(
        "Final-round test metrics per site; whiskers: bootstrap 95 % intervals "
        "(no bar: not defined, e.g. AUC with one class)"
    )
    return fig


def label_histograms(summary: Mapping[str, Any], *, positive_label: int | None) -> Figure:
    """How many examples of each class every site holds, per split."""
    sites = sorted(summary["sites"])
    splits = ("train", "val", "test")
    classes = sorted(
        {
            int(c)
            for s in sites
            for split in splits
            for c in summary["sites"][s].get("label_counts_by_split", {}).get(split, {})
        }
        | {int(c) for s in sites for c in summary["sites"][s].get("label_counts", {})}
    )
    fig, axes = _grid(len(splits), cols=3, width=4.5, height=3.4)
    x = np.arange(len(sites))
    width = 0.8 / max(1, len(classes))
    for ax, split in zip(axes, splits, strict=True):
        for i, c in enumerate(classes):
            counts = []
            for s in sites:
                info = summary["sites"][s]
                by_split = info.get("label_counts_by_split", {}).get(split)
                if by_split is None and split == "train":
                    by_split = info.get("label_counts", {})
                counts.append(int((by_split or {}).get(str(c)) or 0))  # None: suppressed
            name = f"class {c}" + (" (positive)" if c == positive_label else "")
            ax.bar(x + (i - (len(classes) - 1) / 2) * width, counts, width, label=name)
        ax.set_xticks(x, sites, rotation=20, fontsize=8)
        ax.set_xlabel("site (name)")
        ax.set_ylabel("examples (count)")
        ax.set_title(f"{split} split")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Labels per site (a count under [report] min_count is suppressed: no bar)")
    return fig


def _headline(arm: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The arm's main test set: central where there is one, else every site together."""
    if arm["test"].get("global"):
        return "central test", arm["test"]["global"]
    return "all sites' test", arm["test"].get("overall")


def grey_lines(
    ax: Axes, lines: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]]
) -> None:
    """Many unnamed curves as one thin grey collection (one artist, however many lines)."""
    segments = [np.column_stack([x, y]) for x, y in lines if len(x)]
    if segments:
        ax.add_collection(LineCollection(segments, colors=OTHER_SITES, linewidths=0.6, alpha=0.5))


def roc_curves(
    curves: Mapping[str, Any],
    summary: Mapping[str, Any],
    *,
    shown: Collection[str] | None = None,
) -> Figure:
    """ROC curves per arm: the central (or all sites') test set and each site's own.

    The curves come from the binned counts; the AUC in the legend is the one
    reported in ``summary.json`` (from the unbinned scores, at the site) where
    there is one, else the curve's own. ``shown``: the sites drawn by name
    (``None``: every site); the others are thin grey lines with one legend entry.
    """
    arms = curves["arms"]

    def auc(arm: str, where: str, roc: Mapping[str, Any]) -> float:
        exact, _, _ = arm_value(summary["arms"].get(arm, {}), where, Metric.AUC)
        return float(roc["auc"]) if math.isnan(exact) else exact

    fig, axes = _grid(len(arms), cols=min(3, len(arms)), width=4.6, height=4.4)
    for ax, (name, arm) in zip(axes, sorted(arms.items()), strict=True):
        label, main = _headline(arm)
        per_site = sorted(arm["test"]["per_site"].items())
        others = [(s, h["roc"]) for s, h in per_site if shown is not None and s not in shown]
        grey_lines(ax, [(r["fpr"], r["tpr"]) for _, r in others if r["auc"] is not None])
        if others:
            ax.plot([], [], "-", color=OTHER_SITES, lw=0.6, label=f"{len(others)} other sites")
        for site, h in per_site:
            if shown is not None and site not in shown:
                continue
            roc = h["roc"]
            if roc["auc"] is None:
                ax.plot([], [], " ", label=f"{site}: one class only, no curve")
                continue
            value = auc(name, site, roc)
            ax.plot(roc["fpr"], roc["tpr"], lw=1, alpha=0.7, label=f"{site} (AUC {value:.3f})")
        if main is not None and main["roc"]["auc"] is not None:
            roc = main["roc"]
            value = auc(name, "central", roc) if arm["test"].get("global") else roc["auc"]
            ax.plot(roc["fpr"], roc["tpr"], "k-", lw=2.2, label=f"{label} (AUC {value:.3f})")
            t = arm["threshold"]
            point = arm["at_threshold"]["global" if arm["test"].get("global") else "overall"]
            if point and point["sensitivity"] is not None and point["specificity"] is not None:
                ax.plot(
                    [1 - point["specificity"]],
                    [point["sensitivity"]],
                    "*",
                    color="gold",
                    markeredgecolor="k",
                    ms=14,
                    label=f"threshold {t['value']:.2f} ({t['method']})",
                )
        ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate (1 - specificity, fraction)")
        ax.set_ylabel("true-positive rate (sensitivity, fraction)")
        ax.set_title(f"{name}")
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ROC curves on the test sets\n({curves['score']})")
    return fig


def confusion_matrices(curves: Mapping[str, Any]) -> Figure:
    """The confusion matrix of each arm at its operating threshold, on its main test set."""
    arms = curves["arms"]
    positive = curves["positive_label"]
    fig, axes = _grid(len(arms), cols=min(3, len(arms)), width=5.2, height=4.0)
    fig.get_layout_engine().set(w_pad=0.25, wspace=0.08)  # type: ignore[union-attr,call-arg]
    for ax, (name, arm) in zip(axes, sorted(arms.items()), strict=True):
        label, _ = _headline(arm)
        c = arm["at_threshold"]["global" if arm["test"].get("global") else "overall"]
        if c is None:
            ax.set_axis_off()
            continue
        matrix = np.array([[c["tp"], c["fn"]], [c["fp"], c["tn"]]])
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            ax.text(j, i, str(count), ha="center", va="center", color="w" if dark else "k")
        other = "other classes" if curves["num_classes"] > 2 else f"class {1 - positive}"
        names = [f"class {positive} (pos.)", other]
        ax.set_xticks([0, 1], [f"predicted {n}" for n in names], fontsize=8)
        ax.set_yticks([0, 1], [f"true {n}" for n in names], fontsize=8)
        ax.set_xlabel("predicted label (at the threshold)")
        ax.set_ylabel("true label (ground truth)")
        t = arm["threshold"]
        ax.set_title(f"{name}: {label}, threshold {t['value']:.2f}", fontsize=9)
        fig.colorbar(image, ax=ax, label="patients (count)", shrink=0.8)
    fig.suptitle("Confusion matrices at the operating threshold (chosen on validation)")
    return fig


def calibration_plot(curves: Mapping[str, Any]) -> Figure:
    """Reliability: observed share of positives against predicted probability, per arm."""
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    for name, arm in sorted(curves["arms"].items()):
        label, main = _headline(arm)
        if main is None or not main["calibration"]["predicted"]:
            continue
        cal = main["calibration"]
        counts = np.asarray(cal["count"])
        ax.plot(cal["predicted"], cal["observed"], "-", lw=1, color=_colour(name))
        ax.scatter(
            cal["predicted"],
            cal["observed"],
            s=12 + 240 * counts / counts.max(),
            color=_colour(name),
            alpha=0.8,
            label=f"{name} ({label}, {int(counts.sum())} patients)",
        )
    positive = curves["positive_label"]
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted probability of class {positive} (fraction)")
    ax.set_ylabel(f"observed share of class {positive} (fraction)")
    ax.set_title("Calibration: 10 probability groups\nmarker area = patients in the group")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig
