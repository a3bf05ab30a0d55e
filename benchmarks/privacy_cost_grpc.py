"""The ``--runtime grpc`` arms of ``privacy_cost.py``: real processes on 127.0.0.1.

Each arm is a whole deployment: a consortium CA, one ``flmi server`` process
and one ``flmi client`` process per site, over mutual TLS on loopback, on
generated hospital images (``data.source = "synthetic"``). Only
``privacy.aggregation`` differs between arms. The round records and the final
model are read back from the server's run directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from flmi.core.federation import RoundRecord
from flmi.core.params import Params
from flmi.report.resume import record_from_line
from flmi.runtime.grpc.provisioning import add_site, init_ca
from flmi.tensorio import load_tensors

LISTENING = re.compile(r"flmi server listening on (\S+)")


def _fed(*, arm: str, sites: list[str], images: int, rounds: int, width: int) -> dict[str, Any]:
    return {
        "data": {"source": "synthetic", "image_size": 28, "n_patients": images * len(sites)},
        "partition": {"method": "natural", "num_sites": len(sites), "min_examples_per_site": 5},
        "task": {"num_classes": 2, "width": width},
        "federation": {
            "rounds": rounds,
            "lr": 0.01,
            "batch_size": 32,
            "local_epochs": 1,
            "min_sites": len(sites),
            "seed": 0,
            "eval_every": rounds,
        },
        "runtime": {"device": "cpu", "torch_threads": 1},
        "report": {"bootstrap_resamples": 0},
        "privacy": {"aggregation": arm},
        "deploy": {
            "sites": sites,
            "round_timeout_s": 600.0,
            "wait_for_sites_s": 600.0,
            "heartbeat_s": 1.0,
        },
    }


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def run_grpc_arm(
    arm: str, *, sites: int, images: int, rounds: int, width: int
) -> tuple[list[RoundRecord], Params]:
    """One deployment under ``arm``; the server's round records and final weights."""
    names = [f"hospital_{i + 1}" for i in range(sites)]  # the generated hospitals' names
    with tempfile.TemporaryDirectory(prefix=f"flmi-bench-{arm}-") as tmp:
        root = Path(tmp)
        init_ca(ca_dir=root / "ca")
        fed = root / "fed.toml"
        fed.write_text(
            tomli_w.dumps(_fed(arm=arm, sites=names, images=images, rounds=rounds, width=width))
        )
        flmi = [sys.executable, "-m", "flmi.cli"]
        server_log = root / "server.log"
        server = _start(
            [
                *flmi,
                *("server", "--config", str(fed), "--certs", str(root / "ca" / "server")),
                *("--address", "127.0.0.1:0", "--out", str(root / "run")),
            ],
            server_log,
        )
        processes = [server]
        try:
            address = _address(server, server_log)
            for name in names:
                add_site(ca_dir=root / "ca", name=name, out=root / "bundles" / name)
                site_toml = root / f"{name}.toml"
                site_toml.write_text(
                    tomli_w.dumps(
                        {
                            "data": {"federation_config": str(fed)},
                            "site": {"state_dir": str(root / "state" / name), "torch_threads": 1},
                        }
                    )
                )
                processes.append(
                    _start(
                        [
                            *flmi,
                            *("client", "--server", address, "--site", name),
                            *("--certs", str(root / "bundles" / name), "--data", str(site_toml)),
                        ],
                        root / f"{name}.log",
                    )
                )
            _wait_all(processes, root)
            lines = (root / "run" / "metrics.jsonl").read_text().splitlines()
            records = [record_from_line(_json(line)) for line in lines if line.strip()]
            params, _ = load_tensors(path=root / "run" / "model.safetensors")
            return records, params
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()


def _wait_all(processes: list[subprocess.Popen[bytes]], root: Path) -> None:
    """Wait for every process; stop at the first that fails, showing the logs."""
    while any(p.poll() is None for p in processes):
        if any(p.returncode not in (None, 0) for p in processes):
            break
        time.sleep(0.2)
    if any(p.returncode != 0 for p in processes):
        logs = "\n".join(f"--- {log.name}\n{log.read_text()}" for log in sorted(root.glob("*.log")))
        raise SystemExit(f"a deployment process failed:\n{logs}")


def _json(line: str) -> dict[str, Any]:
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def _address(server: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text())
        if match:
            return match.group(1)
        if server.poll() is not None:
            raise SystemExit(f"the server exited early:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit(f"the server did not start listening:\n{log.read_text()}")
