"""The example plug-in package, installed for real, runs, resumes and predicts from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

PLUGIN = REPO / "examples" / "plugin"
FLMI = [sys.executable, "-m", "flmi.cli"]


def _flmi(args: list[str], *, path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run(
        [*FLMI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=240
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed into a folder of its own (no network, no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    return target


@pytest.mark.slow
def test_example_plugin_runs_resumes_and_predicts_from_the_cli(
    installed: Path, tmp_path: Path
) -> None:
    out, config = tmp_path / "run", PLUGIN / "blobs.toml"
    with_plugin = [REPO, installed]

    listed = _flmi(["strategies"], path=with_plugin)
    assert "equal_weight" in listed.stdout and "fedavg" in listed.stdout
    ran = _flmi(["run", str(config), "--out", str(out)], path=with_plugin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    record = json.loads((out / "plugins.json").read_text())
    for kind, name in (
        ("strategy", "equal_weight"),
        ("model", "tiny_cnn"),
        ("data_source", "blobs"),
    ):
        assert record[kind]["name"] == name
        assert (record[kind]["distribution"], record[kind]["version"]) == (
            "flmi-example-plugin",
            "0.1.0",
        )
    assert record["runtime"]["distribution"] == "flmi"

    # As if the run had died after round 2: the pointer goes back one checkpoint.
    pointer = out / "checkpoints" / "federated-latest.json"
    pointer.write_text(json.dumps({"file": "federated-round-00002.safetensors", "round": 2}))
    resumed = _flmi(["run", str(config), "--out", str(out), "--resume"], path=with_plugin)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "round   3/3" in resumed.stdout and "round   1/3" not in resumed.stdout
    rounds = [
        json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert rounds == [1, 2, 3]

    images = tmp_path / "images.npz"
    np.savez(images, np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    predicted = _flmi(
        ["predict", str(out), str(images), "--out", str(tmp_path / "p.csv")], path=with_plugin
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 6  # header + 5 images

    for args in (
        ["run", str(config), "--out", str(out), "--resume"],
        ["predict", str(out), str(images)],
    ):
        missing = _flmi(args, path=[REPO])
        assert missing.returncode == 2
        text = " ".join(missing.stdout.split())
        assert "'flmi-example-plugin' 0.1.0, which is not installed" in text
        assert "pip install 'flmi-example-plugin==0.1.0'" in text
        assert (
            "strategy 'equal_weight'" in text and "network" not in text
        ) or "model 'tiny_cnn'" in text


@pytest.mark.slow
def test_example_plugin_client_algorithm_runs_at_the_sites_from_its_entry_point(
    installed: Path, tmp_path: Path
) -> None:
    # Arrange: one round with the plug-in's clip_grad at a tiny norm, one without it.
    config, with_plugin = PLUGIN / "blobs.toml", [REPO, installed]
    runs = {}
    for label, norm in (("clipped", "0.001"), ("plain", "0")):
        out = tmp_path / label
        ran = _flmi(
            ["run", str(config), "--out", str(out), "--set", "federation.rounds=1",
             "--set", f"strategy.clip_grad_norm={norm}", "--set", "baselines.pooled=false",
             "--set", "baselines.local=false"],
            path=with_plugin,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        runs[label] = (out / "checkpoints" / "federated-round-00001.safetensors").read_bytes()

    # Assert: the sites loaded clip_grad through its entry point and it changed their training.
    assert runs["clipped"] != runs["plain"]
