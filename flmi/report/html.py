"""``RUN_DIR/report.html``: one self-contained page with every plot embedded as a PNG.

Built from what the run directory already holds (``metrics.jsonl``,
``summary.json``, ``curves.json``, ``config.toml``), so ``flmi report RUN_DIR``
can rebuild it at any time without the data. Figures are kept in
``RUN_DIR/figures/`` under a hash of their inputs and redrawn only when those
change. Past :data:`flmi.report.site_selection.SITE_LIMIT` sites the per-site
figures show distributions over the sites with a few sites named, so the
report costs the same for any number of sites; the tables keep every site.
"""

from __future__ import annotations

import base64
import html
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from flmi.core.errors import RunDirError
from flmi.report import plots, site_plots
from flmi.report.contributions_figure import SECTION as CONTRIBUTIONS_SECTION
from flmi.report.contributions_figure import contribution_section
from flmi.report.figure_cache import FIGURES, FigureCache
from flmi.report.rundir import CONFIG, CURVES, METRICS, SUMMARY
from flmi.report.site_selection import SITE_LIMIT, SiteSelection
from flmi.report.summary_schema import read_summary
from flmi.tensorio import atomic_write_bytes

REPORT = "report.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
img { max-width: 100%; } table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.left, th.left { text-align: left; }
.note { color: #555; font-size: 0.9em; }
"""

SECTIONS = (
    "overview",
    "metric-curves",
    "site-bars",
    "label-histograms",
    "roc",
    "confusion",
    "calibration",
    "threshold",
    "ci-table",
)
#: Sections only some runs have, after :data:`SECTIONS` when they do.
OPTIONAL_SECTIONS = (CONTRIBUTIONS_SECTION,)


def _read_summary(path: Path) -> dict[str, Any]:
    """``summary.json`` as JSON, checked against its layout (errors name the field)."""
    if not path.is_file():
        raise RunDirError(
            f"{path} is missing; point `flmi report` at a finished run directory (it needs "
            f"{SUMMARY} and {METRICS})"
        )
    return read_summary(path).to_json()


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    head = "".join(
        f'<th class="left">{html.escape(h)}</th>' if i < left else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="left">{html.escape(c)}</td>' if i < left else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def ci_table(summary: Mapping[str, Any]) -> str:
    """Every final test metric with its bootstrap 95 % interval, per arm and test set."""
    header = ["arm", "test set", *[plots.LABELS[m] for m in plots.METRICS]]
    rows: list[list[str]] = []
    for name, arm in sorted(summary["arms"].items()):
        places = (["central"] if arm.get("global") else []) + sorted(arm.get("per_site", {}))
        for place in places:
            cells = []
            for metric in plots.METRICS:
                value, low, high = plots.arm_value(arm, place, metric)
                interval = "" if low != low else f" [{low:.3f}, {high:.3f}]"  # NaN: no interval
                cells.append(_fmt(None if value != value else value) + interval)
            rows.append([name, place, *cells])
    return _table(header, rows, left=2)


def threshold_table(summary: Mapping[str, Any]) -> str:
    """Each arm's threshold, how it was chosen, and test sensitivity/specificity there."""
    header = [
        "arm",
        "test set",
        "threshold",
        "method",
        "chosen on",
        "val sens.",
        "val spec.",
        "test sens.",
        "test spec.",
        "TP / FN / FP / TN",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name, arm in sorted(summary["arms"].items()):
        t, at = arm.get("threshold"), arm.get("at_threshold")
        if not t or not at:
            continue
        if t.get("note"):
            notes.append(f"{name}: {t['note']}")
        places = [("central", at.get("global")), ("all sites", at.get("overall"))]
        places += sorted(at.get("per_site", {}).items())
        for place, c in places:
            if not c:
                continue
            rows.append(
                [
                    name,
                    place,
                    f"{t['value']:.2f}",
                    str(t["method"]),
                    str(t["chosen_on"]),
                    _fmt(t.get("val_sensitivity")),
                    _fmt(t.get("val_specificity")),
                    _fmt(c["sensitivity"]),
                    _fmt(c["specificity"]),
                    f"{c['tp']} / {c['fn']} / {c['fp']} / {c['tn']}",
                ]
            )
    note = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return _table(header, rows, left=2) + note


def _overview(summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    task, strategy = config.get("task", {}), config.get("strategy", {})
    data, federation = config.get("data", {}), config.get("federation", {})
    rows = [
        ["data", f"{data.get('source', '?')} {Path(str(data.get('path', ''))).name}".strip()],
        [
            "task",
            f"{task.get('num_classes', '?')} classes, "
            f"positive label {task.get('positive_label', '?')}",
        ],
        ["strategy", str(summary.get("strategy", strategy.get("name", "?")))],
        ["sites", ", ".join(sorted(summary.get("sites", {})))],
        ["rounds", str(summary.get("rounds", federation.get("rounds", "?")))],
        ["seed", str(summary.get("seed", "?"))],
        ["wall time", f"{summary.get('wall_s', 0):.1f} s"],
        ["flmi", str(summary.get("versions", {}).get("flmi", "?"))],
    ]
    return _table(["", "value"], rows)


COARSE_BOUND = 0.02


def coarse_note(curves: Mapping[str, Any]) -> str:
    """A warning where scores crowd into so few bins that a curve is coarse."""
    coarse = sorted(
        f"{arm} / {where}"
        for arm, entry in curves.get("arms", {}).items()
        for where, h in [
            ("central", entry["test"].get("global")),
            *entry["test"].get("per_site", {}).items(),
        ]
        if h and (h["roc"].get("auc_binning_bound") or 0.0) > COARSE_BOUND
    )
    if not coarse:
        return ""
    return (
        "<p class='note'><b>Coarse curves:</b> the predicted probabilities crowd into few of "
        f"the {curves.get('bins')} bins for {html.escape(', '.join(coarse))}, so those curves "
        "are drawn from few points and their area can differ from the reported AUC by more "
        f"than {COARSE_BOUND}. Raise [report] histogram_bins, or train longer.</p>"
    )


def _has_class_labels(summary: Mapping[str, Any]) -> bool:
    """Whether any site lists class counts (classification runs do)."""
    return any(
        info.get("label_counts") or info.get("label_counts_by_split")
        for info in summary.get("sites", {}).values()
    )


def _km_figure(run_dir: Path) -> str:
    """A survival run's Kaplan-Meier plot (``km.png``), embedded, or nothing."""
    km = run_dir / "km.png"
    if not km.is_file():
        return ""
    return (
        _image(km.read_bytes(), "Kaplan-Meier curves")
        + "<p class='note'>Kaplan-Meier curve of every site and the federated curve, "
        "built from the count tables the sites sent (no patient row left a site).</p>"
    )


def labels_table(summary: Mapping[str, Any], *, positive_label: int | None) -> str:
    """Every site's examples per class and split (a suppressed count: ``-``)."""
    classes = site_plots.label_classes(summary)
    header = ["site"] + [
        f"{split} class {c}" + (" (pos.)" if c == positive_label else "")
        for split in site_plots.SPLITS
        for c in classes
    ]
    rows = []
    for site, info in sorted(summary["sites"].items()):
        cells = []
        for split in site_plots.SPLITS:
            by_split = info.get("label_counts_by_split", {}).get(split)
            if by_split is None and split == "train":
                by_split = info.get("label_counts", {})
            for c in classes:
                count = (by_split or {}).get(str(c))
                cells.append("-" if count is None else str(int(count)))
        rows.append([site, *cells])
    return _table(header, rows)


def build_report(
    run_dir: Path, *, cache: FigureCache | None = None, site_limit: int = SITE_LIMIT
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Parameters
    ----------
    run_dir
        A finished (or interrupted) run directory.
    cache
        Where figures are kept; default ``run_dir/figures``.
    site_limit
        The most sites a per-site figure draws one by one; past it, distributions.

    Raises
    ------
    RunDirError
        ``run_dir`` lacks ``summary.json`` or ``metrics.jsonl``.
    """
    summary = _read_summary(run_dir / SUMMARY)
    metrics_path = run_dir / METRICS
    if not metrics_path.is_file():
        raise RunDirError(f"{metrics_path} is missing; point `flmi report` at a run directory")
    lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    config = tomllib.loads((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    curves = json.loads((run_dir / CURVES).read_text()) if (run_dir / CURVES).is_file() else None
    figures = FigureCache(directory=run_dir / FIGURES) if cache is None else cache
    selection = site_plots.report_selection(summary, limit=site_limit)
    parts = {
        **_run_sections(
            run_dir=run_dir,
            summary=summary,
            config=config,
            lines=lines,
            figures=figures,
            selection=selection,
        ),
        **_threshold_sections(summary=summary, curves=curves, figures=figures, selection=selection),
        **contribution_section(summary),
    }
    path = run_dir / REPORT
    atomic_write_bytes(path, _page(run_dir, parts).encode("utf-8"))
    return path


#: A report section: its title and its HTML body.
_Section = tuple[str, str]
_MISSING_CURVES = "<p class='note'>This run directory holds no curves.json.</p>"


def _figure(
    figures: FigureCache,
    name: str,
    *,
    title: str,
    inputs: object,
    draw: Callable[[], Figure],
    caption: str,
) -> str:
    """A figure (drawn, or reused when ``inputs`` did not change) as an embedded PNG."""
    png = figures.png(name, inputs=inputs, draw=draw)
    return f"{_image(png, title)}<p class='note'>{html.escape(caption)}</p>"


def _site_metrics(
    summary: Mapping[str, Any], figures: FigureCache, selection: SiteSelection
) -> str:
    """Final metrics per site: bars up to the limit, a distribution over the sites past it."""
    sites = sorted(summary["sites"])
    inputs = {"arms": summary["arms"], "sites": sites, "shown": selection.shown}
    if not selection.summarising:
        return _figure(
            figures,
            "site-bars",
            title="metrics per site",
            inputs=inputs,
            draw=lambda: plots.site_bars(summary),
            caption="Each site's model scored on its own test split; error bars are bootstrap "
            "95 % intervals.",
        )
    return _figure(
        figures,
        "site-distribution",
        title="metrics over the sites",
        inputs=inputs,
        draw=lambda: site_plots.site_distribution(summary, selection),
        caption="Each site's model scored on its own test split: one dot per site, the box "
        "spans the quartiles, the diamond is the central test set. " + selection.note(),
    )


def _site_labels(
    summary: Mapping[str, Any],
    figures: FigureCache,
    selection: SiteSelection,
    *,
    positive: int | None,
) -> str:
    """Labels per site: bars up to the limit, a distribution past it; always the full table."""
    inputs = {
        "sites": {
            s: {k: info.get(k) for k in ("label_counts", "label_counts_by_split")}
            for s, info in sorted(summary["sites"].items())
        },
        "positive": positive,
        "shown": selection.shown,
    }
    table = labels_table(summary, positive_label=positive)
    if not selection.summarising:
        return (
            _figure(
                figures,
                "label-histograms",
                title="labels per site",
                inputs=inputs,
                draw=lambda: plots.label_histograms(summary, positive_label=positive),
                caption="Examples of each class in every site's train, validation and test split.",
            )
            + table
        )
    return (
        _figure(
            figures,
            "label-distribution",
            title="labels over the sites",
            inputs=inputs,
            draw=lambda: site_plots.label_distribution(summary, selection, positive_label=positive),
            caption="Examples of each class per split: one dot per site, the box spans the "
            "quartiles. " + selection.note(),
        )
        + table
    )


def _run_sections(
    *,
    run_dir: Path,
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    figures: FigureCache,
    selection: SiteSelection,
) -> dict[str, _Section]:
    """The run, its metrics per round, per site, and each site's labels."""
    positive = config.get("task", {}).get("positive_label")
    return {
        "overview": ("Run", _overview(summary, config)),
        "metric-curves": (
            "Metrics per round",
            _figure(
                figures,
                "metric-curves",
                title="metrics per round",
                inputs=lines,
                draw=lambda: plots.metric_curves(lines),
                caption="Test metrics (solid) and validation metrics (dashed) after each round, "
                "per arm.",
            ),
        ),
        "site-bars": ("Final metrics per site", _site_metrics(summary, figures, selection)),
        "label-histograms": (
            "Labels per site",
            _site_labels(summary, figures, selection, positive=positive)
            if _has_class_labels(summary)
            else "<p class='note'>This task has no class labels (regression or survival): "
            "each site's target distribution is in the data section of summary.json.</p>"
            + _km_figure(run_dir),
        ),
    }


def _threshold_sections(
    *,
    summary: Mapping[str, Any],
    curves: Mapping[str, Any] | None,
    figures: FigureCache,
    selection: SiteSelection,
) -> dict[str, _Section]:
    """ROC, confusion and calibration from ``curves.json``, the threshold, the intervals."""
    shown = selection.shown if selection.summarising else None
    return {
        "roc": (
            "ROC curves",
            _figure(
                figures,
                "roc",
                title="ROC curves",
                inputs={"curves": curves, "arms": summary["arms"], "shown": shown},
                draw=lambda: plots.roc_curves(curves or {}, summary, shown=shown),
                caption="Drawn from each site's counts of positives and negatives per "
                "probability bin (no patient's score left a site); the AUC in the legend is the "
                "one reported in summary.json. The star marks the operating threshold."
                + (" Grey: the sites not named. " + selection.note() if shown else ""),
            )
            + coarse_note(curves or {})
            if curves
            else _MISSING_CURVES,
        ),
        "confusion": (
            "Confusion matrix at the threshold",
            _figure(
                figures,
                "confusion",
                title="confusion matrices",
                inputs=curves,
                draw=lambda: plots.confusion_matrices(curves or {}),
                caption="Counts of test patients at the threshold chosen on validation data.",
            )
            if curves
            else _MISSING_CURVES,
        ),
        "calibration": (
            "Calibration",
            _figure(
                figures,
                "calibration",
                title="calibration",
                inputs=curves,
                draw=lambda: plots.calibration_plot(curves or {}),
                caption="Observed share of the positive class against the predicted "
                "probability, in 10 groups of the probability; a calibrated model follows the "
                "diagonal.",
            )
            if curves
            else _MISSING_CURVES,
        ),
        "threshold": (
            "Operating threshold",
            "<p class='note'>Chosen on every site's validation split together (never on test "
            "data): Youden's J, or [report] target_sensitivity. Test sensitivity and "
            "specificity at that threshold, central, all sites together and per site.</p>"
            + threshold_table(summary),
        ),
        "ci-table": (
            "Confidence intervals",
            "<p class='note'>Final-round test metrics with percentile bootstrap 95 % intervals "
            "(each site resamples its own patients). Sensitivity and specificity here call "
            "the most probable class; the table above gives them at the operating threshold. "
            "The local arm's central row is the mean of the local models, with no interval.</p>"
            + ci_table(summary),
        ),
    }


def _page(run_dir: Path, parts: Mapping[str, _Section]) -> str:
    """The whole HTML page: a heading, then every section in :data:`SECTIONS` order."""
    body = "".join(
        f'<section id="{key}"><h2>{html.escape(parts[key][0])}</h2>{parts[key][1]}</section>'
        for key in (*SECTIONS, *OPTIONAL_SECTIONS)
        if key in parts
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>flmi run report: {html.escape(run_dir.name)}</title><style>{STYLE}</style>"
        f"</head><body><h1>flmi run report</h1><p class='note'>{html.escape(str(run_dir))}</p>"
        f"{body}</body></html>"
    )
