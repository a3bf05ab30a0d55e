"""The built wheel, installed into a fresh venv, runs ``flmi demo`` and ``flmi init``.

No network: the wheel is built without build isolation (setuptools of this
environment) and installed with ``--no-deps --no-index``; its dependencies
(torch, MONAI...) are this environment's, reached through a ``.pth`` file
that puts this environment's site-packages after the fresh one's. The check
is that everything a run needs (the bundled demo config, the templates) is
inside the wheel, and that the installed ``flmi`` is the one imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PIP = (sys.executable, "-m", "pip")
#: One short round of the demo, federated arm only.
QUICK_DEMO = [
    *("--set", "federation.rounds=1", "--set", "data.n_patients=400"),
    *("--set", "baselines.pooled=false", "--set", "baselines.local=false"),
]


def _run(command: list[str], *, cwd: Path, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_in_a_fresh_venv_runs_the_demo_and_writes_templates(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "flmi", source / "flmi", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("flmi-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
    )
    fresh = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    (fresh / "zz_machine_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = _run([str(python), "-c", "import flmi; print(flmi.__file__)"], cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(fresh)

    flmi = str(venv / "bin" / "flmi")
    out = _run(
        [flmi, "demo", "--out", str(tmp_path / "run"), *QUICK_DEMO],
        cwd=tmp_path,
    )
    assert "run directory:" in out
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "report.html").is_file()

    _run([flmi, "init", str(tmp_path / "kit"), "--template", "deploy"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "kit").iterdir()) == [
        "README.md",
        "fed.toml",
        "hospital_1.toml",
        "hospital_2.toml",
        "revoked.txt",
    ]
