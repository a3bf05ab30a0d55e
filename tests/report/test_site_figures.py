"""Per-site figures past the site limit, and figures reused when their inputs did not change.

A real 4-site run is widened to 20 or 200 sites by copying its sites under new
names (with shifted scores), so the report's cost can be counted without
training 200 sites.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from flmi.config import load_config
from flmi.report import figure_cache, km_plot, plots, site_plots
from flmi.report.figure_cache import FIGURES, PNG_MAGIC, FigureCache
from flmi.report.html import build_report
from flmi.report.site_selection import NAMED, SITE_LIMIT, select_sites
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

SUMMARISED = ["metric-curves", "site-distribution", "label-distribution", "roc", "confusion",
              "calibration"]  # fmt: skip
EVERY_SITE = ["metric-curves", "site-bars", "label-histograms", "roc", "confusion", "calibration"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sites")
    tables = tiny_tables(baselines={"pooled": True}, report={"min_count": 1})
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


@pytest.fixture
def quick_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures are built as usual but not rasterised (the cache and the page do not care)."""

    def render(fig: Figure, *, dpi: int) -> bytes:
        return PNG_MAGIC + f"{len(fig.axes)} panels at {dpi} dpi".encode()

    monkeypatch.setattr(figure_cache, "render_png", render)


def _shift(metrics: dict[str, Any], by: float) -> dict[str, Any]:
    shifted = {k: v if v is None else min(1.0, max(0.0, v - by)) for k, v in metrics.items()}
    return {**shifted, "auc": 0.95 - by}


def widen(src: Path, dst: Path, sites: int) -> Path:
    """A copy of run ``src`` with ``sites`` sites: site_000, site_001, ... copied round-robin.

    Site ``i`` has every metric lowered by ``i / 1000`` and an AUC of ``0.95 - i / 1000``, so
    ranking by AUC is strict.
    """
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    curves = json.loads((dst / "curves.json").read_text())
    old = sorted(summary["sites"])
    names = [f"site_{i:03d}" for i in range(sites)]

    def spread(block: dict[str, Any], shift: bool) -> dict[str, Any]:
        present = sorted(block)
        if not present:
            return block
        return {
            name: _shift(block[present[i % len(present)]], i / 1000)
            if shift
            else copy.deepcopy(block[present[i % len(present)]])
            for i, name in enumerate(names)
        }

    summary["sites"] = {n: summary["sites"][old[i % len(old)]] for i, n in enumerate(names)}
    summary["data"]["sites"] = {
        n: summary["data"]["sites"][old[i % len(old)]] for i, n in enumerate(names)
    }
    for arm in summary["arms"].values():
        arm["per_site"] = spread(arm["per_site"], shift=True)
        arm["ci"]["per_site"] = spread(arm["ci"]["per_site"], shift=False)
        arm["at_threshold"]["per_site"] = spread(arm["at_threshold"]["per_site"], shift=False)
    for arm in curves["arms"].values():
        arm["test"]["per_site"] = spread(arm["test"]["per_site"], shift=False)
        arm["withheld"] = []
    (dst / "summary.json").write_text(json.dumps(summary))
    (dst / "curves.json").write_text(json.dumps(curves))
    return dst


def _children(fig: Figure) -> int:
    """Artists in every panel and the figure itself: what drawing the figure costs."""
    return sum(len(ax.get_children()) for ax in fig.axes) + len(fig.get_children())


@pytest.mark.usefixtures("quick_png")
def test_20_and_200_sites_draw_the_same_figures(small_run: Path, tmp_path: Path) -> None:
    drawn = {}
    for n in (20, 200):
        cache = FigureCache(directory=None)
        build_report(widen(small_run, tmp_path / f"run{n}", n), cache=cache)
        drawn[n] = cache.drawn

    assert drawn[20] == drawn[200] == SUMMARISED


def test_summarised_figures_hold_as_many_artists_for_200_sites_as_for_20(
    small_run: Path, tmp_path: Path
) -> None:
    counts = {}
    for n in (20, 200):
        run = widen(small_run, tmp_path / f"run{n}", n)
        summary = json.loads((run / "summary.json").read_text())
        curves = json.loads((run / "curves.json").read_text())
        selection = site_plots.report_selection(summary)
        counts[n] = [
            _children(site_plots.site_distribution(summary, selection)),
            _children(site_plots.label_distribution(summary, selection, positive_label=1)),
            _children(plots.roc_curves(curves, summary, shown=selection.shown)),
        ]

    assert counts[20] == counts[200]


@pytest.mark.usefixtures("quick_png")
def test_summarised_figures_label_their_axes_with_units_and_have_a_legend(
    small_run: Path, tmp_path: Path
) -> None:
    run = widen(small_run, tmp_path / "run", 20)
    summary = json.loads((run / "summary.json").read_text())
    selection = site_plots.report_selection(summary)

    for fig in (
        site_plots.site_distribution(summary, selection),
        site_plots.label_distribution(summary, selection, positive_label=1),
    ):
        assert fig.legends
        for ax in fig.axes:
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert re.search(r"\(.+\)", label), f"no unit in axis label {label!r}"


@pytest.mark.usefixtures("quick_png")
def test_up_to_the_limit_every_site_gets_its_own_bar(small_run: Path, tmp_path: Path) -> None:
    cache = FigureCache(directory=None)
    page = build_report(widen(small_run, tmp_path / "run", SITE_LIMIT), cache=cache).read_text()

    assert cache.drawn == EVERY_SITE
    assert "are summarised" not in page


def _section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, flags=re.S)
    assert match, key
    return match.group(1)


@pytest.mark.usefixtures("quick_png")
def test_past_the_limit_the_tables_keep_every_site_and_the_page_says_who_is_named(
    small_run: Path, tmp_path: Path
) -> None:
    page = build_report(widen(small_run, tmp_path / "run", 200)).read_text()

    rows = re.findall(r'<tr><td class="left">(site_\d{3})</td>', _section(page, "label-histograms"))
    assert rows == [f"site_{i:03d}" for i in range(200)]
    ci = _section(page, "ci-table")
    for i in range(200):
        assert f">site_{i:03d}<" in ci
    # Site i's AUC is 0.95 - i / 1000: the highest are sites 0-2, the lowest 197-199.
    note = _section(page, "site-bars")
    named = re.search(r"named in the figure are ([^(]+) \(", note)
    assert named
    shown = named.group(1).split(", ")
    assert len(shown) == 2 * NAMED
    assert shown == ["site_000", "site_001", "site_002", "site_197", "site_198", "site_199"]
    assert "194 (" in note and "are summarised" in note


@pytest.mark.usefixtures("quick_png")
def test_a_second_report_reuses_every_figure_and_writes_the_same_page(
    small_run: Path, tmp_path: Path
) -> None:
    run = widen(small_run, tmp_path / "run", 20)
    first_cache, second_cache = (
        FigureCache(directory=run / FIGURES),
        FigureCache(directory=run / FIGURES),
    )
    first = build_report(run, cache=first_cache).read_bytes()

    second = build_report(run, cache=second_cache).read_bytes()

    assert first_cache.drawn == SUMMARISED
    assert second_cache.drawn == [] and second_cache.reused == SUMMARISED
    assert second == first


@pytest.mark.usefixtures("quick_png")
def test_a_changed_input_redraws_that_figure_only_and_drops_its_old_file(
    small_run: Path, tmp_path: Path
) -> None:
    run = widen(small_run, tmp_path / "run", 20)
    build_report(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["val"] = {**(last["val"] or {}), "auc": 0.123}
    (run / "metrics.jsonl").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    cache = FigureCache(directory=run / FIGURES)

    build_report(run, cache=cache)

    assert cache.drawn == ["metric-curves"]
    assert len(list((run / FIGURES).glob("metric-curves.*.png"))) == 1


@pytest.mark.usefixtures("quick_png")
def test_a_damaged_cached_figure_is_drawn_again(small_run: Path, tmp_path: Path) -> None:
    run = widen(small_run, tmp_path / "run", 4)
    build_report(run)
    (stored,) = (run / FIGURES).glob("roc.*.png")
    stored.write_bytes(b"not a png")
    cache = FigureCache(directory=run / FIGURES)

    build_report(run, cache=cache)

    assert cache.drawn == ["roc"]
    assert stored.read_bytes().startswith(PNG_MAGIC)


def test_select_sites_names_every_site_up_to_the_limit() -> None:
    sites = [f"s{i:02d}" for i in range(SITE_LIMIT)]

    selection = select_sites(sites, {}, basis="AUC")

    assert selection.shown == tuple(sites) and not selection.summarising


def test_select_sites_past_the_limit_names_the_lowest_and_highest_and_skips_nan() -> None:
    sites = [f"s{i:02d}" for i in range(SITE_LIMIT + 3)]
    scores = {s: i / 100 for i, s in enumerate(sites)}
    scores["s00"] = math.nan  # not ranked
    scores["s05"] = scores["s01"]  # a tie at the low end goes to the name: s01, then s05

    selection = select_sites(sites, scores, basis="AUC")

    assert selection.shown == ("s01", "s02", "s05", "s12", "s13", "s14")
    assert "s00" in selection.summarised and len(selection.summarised) == len(sites) - 6
    assert "the 3 lowest and the 3 highest AUC" in selection.note()


def test_select_sites_without_any_score_names_the_first_sites_by_name() -> None:
    sites = [f"s{i:02d}" for i in range(20)]

    selection = select_sites(sites, {s: math.nan for s in sites}, basis="AUC")

    assert selection.shown == ("s00", "s01", "s02", "s03", "s04", "s05")
    assert "not defined at any site" in selection.basis


def _km(sites: int) -> dict[str, object]:
    curve = {"time": [1.0, 2.0, 3.0], "survival": [0.9, 0.7, 0.5]}
    return {
        "mode": "exact",
        "bin_width": 0.0,
        "min_count": None,
        "sites": {
            f"site_{i:03d}": {**curve, "survival": [0.9, 0.7, 0.5 - i / 1000]} for i in range(sites)
        },
        "federated": curve,
    }


def test_km_figure_holds_as_many_artists_for_200_sites_as_for_20() -> None:
    assert _children(km_plot.km_figure(_km(20))) == _children(km_plot.km_figure(_km(200)))


def test_km_plot_is_drawn_once_for_the_same_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    draw = km_plot.km_figure

    def counting(section: Any) -> Figure:
        calls.append(1)
        return draw(section)

    monkeypatch.setattr(km_plot, "km_figure", counting)
    km_plot.write_km(tmp_path, _km(3))
    km_plot.write_km(tmp_path, _km(3))  # a resumed run writes the same curves again
    assert len(calls) == 1 and (tmp_path / "km.png").read_bytes().startswith(b"\x89PNG")

    km_plot.write_km(tmp_path, _km(4))

    assert len(calls) == 2
