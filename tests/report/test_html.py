"""report.html: every section, every plot labelled (tests/test_run.py: `flmi run` writes it)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from flmi.cli import main
from flmi.config import load_config
from flmi.report import plots
from flmi.report.html import SECTIONS
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    tables = tiny_tables(baselines={"pooled": True, "local": True})
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    assert not (tmp / "run" / "report.html").exists()  # `flmi run` writes it, not the library
    assert main(["report", str(tmp / "run")]) == 0
    return tmp / "run"


def _sections(page: str) -> dict[str, str]:
    found = re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S)
    return dict(found)


def test_flmi_report_writes_a_self_contained_page_with_every_section_and_image(
    run_dir: Path,
) -> None:
    page = (run_dir / "report.html").read_text()

    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    for key in (
        "metric-curves",
        "site-bars",
        "label-histograms",
        "roc",
        "confusion",
        "calibration",
    ):
        images = re.findall(r'src="data:image/png;base64,([^"]+)"', sections[key])
        assert len(images) == 1, key
        assert base64.b64decode(images[0]).startswith(PNG_MAGIC)
    assert 'src="http' not in page and "<script" not in page  # nothing fetched from elsewhere
    for arm in ("federated", "pooled", "local"):
        assert arm in sections["ci-table"] and arm in sections["threshold"]
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", sections["ci-table"])


def test_flmi_report_on_a_folder_without_a_run_names_the_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json is missing" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "report.html").exists()


def _figures(run_dir: Path) -> list[Figure]:
    summary = json.loads((run_dir / "summary.json").read_text())
    curves = json.loads((run_dir / "curves.json").read_text())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        plots.metric_curves(lines),
        plots.site_bars(summary),
        plots.label_histograms(summary, positive_label=1),
        plots.roc_curves(curves, summary),
        plots.confusion_matrices(curves),
        plots.calibration_plot(curves),
    ]


def test_every_plot_has_axis_labels_with_units_and_a_legend(run_dir: Path) -> None:
    for fig in _figures(run_dir):
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert panels
        for ax in panels:
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert re.search(r"\(.+\)", label), f"no unit in axis label {label!r}"
            colour_bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
            assert ax.get_legend() is not None or fig.legends or colour_bars


def test_metric_curves_leave_out_rounds_that_were_not_evaluated() -> None:
    scored = {"auc": 0.7, "loss": 0.5}
    lines = [
        {"arm": "federated", "round": 1, "global": None, "site_mean": {}, "val": {}},
        {"arm": "federated", "round": 2, "global": scored, "site_mean": scored, "val": scored},
    ]
    fig = plots.metric_curves(lines)
    auc_panel = fig.axes[0]
    test_line = auc_panel.get_lines()[0]
    assert list(test_line.get_xdata()) == [2] and list(test_line.get_ydata()) == [0.7]
