"""Real server and client processes on 127.0.0.1 for the deployment tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from flmi.runtime.grpc.provisioning import add_site, init_ca

LISTENING = re.compile(r"flmi server listening on (\S+)")


def fed_tables(*, site_names: list[str], **sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny federation of generated hospitals that a deployment runs in seconds."""
    tables: dict[str, dict[str, Any]] = {
        "data": {
            "source": "synthetic",
            "image_size": 16,
            "n_patients": max(150, 60 * len(site_names)),
        },
        "partition": {
            "method": "natural",
            "num_sites": len(site_names),
            "min_examples_per_site": 5,
        },
        "task": {"num_classes": 2, "width": 4},
        "federation": {
            "rounds": 2,
            "lr": 0.05,
            "batch_size": 8,
            "local_steps": 2,
            "min_sites": 1,
            "seed": 0,
        },
        "runtime": {"device": "cpu", "torch_threads": 1},
        "report": {"bootstrap_resamples": 0},
        "deploy": {
            "sites": site_names,
            "round_timeout_s": 300.0,
            "wait_for_sites_s": 300.0,
            "heartbeat_s": 0.5,
        },
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    return tables


@dataclass
class Deployment:
    """Certificates, configs and the processes of one test deployment."""

    root: Path
    ca: Path
    fed: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def bundle(self, site: str) -> Path:
        """The site's certificate bundle (made on first use)."""
        out = self.root / "bundles" / site
        if not (out / "site.pem").exists():
            add_site(ca_dir=self.ca, name=site, out=out)
        return out

    def site_toml(self, site: str, *, fed: Path | None = None, **site_keys: Any) -> Path:
        """A ``SITE.toml`` that takes the site's split of ``fed`` (default: the federation's)."""
        path = self.root / f"{site}.toml"
        table: dict[str, Any] = {
            "data": {"federation_config": str(fed or self.fed)},
            "site": {"state_dir": str(self.root / "state" / site), "reconnect_timeout_s": 60.0},
        }
        table["site"].update(site_keys)
        path.write_text(tomli_w.dumps(table))
        return path

    def start_server(
        self,
        *,
        out: Path,
        address: str = "127.0.0.1:0",
        resume: bool = False,
        program: tuple[str, ...] = ("flmi.cli", "server"),
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start ``flmi server`` (or ``python -m PROGRAM``) and return it with its address."""
        log = self.root / f"server-{len(self.processes)}.log"
        command = [
            sys.executable,
            "-m",
            *program,
            "--config",
            str(self.fed),
            "--certs",
            str(self.ca / "server"),
            "--address",
            address,
            "--out",
            str(out),
        ]
        if resume:
            command.append("--resume")
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        self.processes.append(process)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            match = LISTENING.search(log.read_text())
            if match:
                return process, match.group(1)
            if process.poll() is not None:
                pytest.fail(f"the server exited early:\n{log.read_text()}")
            time.sleep(0.1)
        pytest.fail(f"the server did not start listening:\n{log.read_text()}")

    def start_client(
        self, site: str, address: str, *, certs: Path | None = None, data: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``flmi client`` for ``site``; its output goes to ``ROOT/SITE-N.log``."""
        log = self.root / f"{site}-{len(self.processes)}.log"
        command = [
            sys.executable,
            "-m",
            "flmi.cli",
            "client",
            "--server",
            address,
            "--site",
            site,
            "--certs",
            str(certs or self.bundle(site)),
            "--data",
            str(data or self.site_toml(site)),
        ]
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        process.log = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process


def output(process: subprocess.Popen[bytes]) -> str:
    """What a client process printed."""
    return Path(process.log).read_text()  # type: ignore[attr-defined]


def wait(process: subprocess.Popen[bytes], timeout_s: float = 120) -> int:
    """Wait for ``process`` to exit and return its status."""
    return process.wait(timeout=timeout_s)


def metrics(run: Path) -> list[dict[str, Any]]:
    """The lines of ``run/metrics.jsonl`` (none before the first round)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Any, *, timeout_s: float = 120, what: str) -> None:
    """Poll ``condition()`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A CA with a server bundle in ``tmp_path``; every process started is ended afterwards."""
    init_ca(ca_dir=tmp_path / "ca")
    dep = Deployment(root=tmp_path, ca=tmp_path / "ca", fed=tmp_path / "fed.toml")
    yield dep
    for process in dep.processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def write_fed(dep: Deployment, tables: dict[str, Any]) -> Path:
    """Write the federation config."""
    dep.fed.write_text(tomli_w.dumps(tables))
    return dep.fed
