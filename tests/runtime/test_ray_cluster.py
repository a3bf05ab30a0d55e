"""A real two-node Ray cluster on 127.0.0.1 (``ray start``): sites on both nodes, the same model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flmi.config import config_from_dict
from flmi.federated_sites import SiteRecipe
from flmi.runtime.ray import RayRuntime
from flmi.simulation import run_experiment
from tests.runtime.ray_support import ray_tables

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'flmi[ray]')")

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _node(*args: str) -> subprocess.Popen[bytes]:
    """One ``ray start --block`` node of 1 CPU, in a process group of its own."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _nodes_alive(address: str, count: int, timeout_s: float = 120.0) -> None:
    """Wait until ``count`` nodes have joined the cluster at ``address``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ray.init(address=address)
        alive = sum(1 for node in ray.nodes() if node["Alive"])
        ray.shutdown()
        if alive >= count:
            return
        time.sleep(1.0)
    raise AssertionError(f"{count} Ray nodes did not join {address} in {timeout_s} s")


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head and a second node, 1 CPU each; both process groups killed after."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # nodes and driver on 127.0.0.1 only
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_node("--head", f"--port={port}", "--include-dashboard=false")]
    try:
        time.sleep(3.0)
        nodes.append(_node(f"--address={address}"))
        _nodes_alive(address, 2)
        yield address
    finally:
        for node in nodes:
            os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()


def test_a_two_node_cluster_hosts_sites_on_both_nodes_and_gives_the_in_process_model(
    two_nodes: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    tables = ray_tables()
    run_experiment(config=config_from_dict(tables), out=tmp_path / "inprocess")
    joined = config_from_dict(ray_tables(runtime={"name": "ray", "address": two_nodes}))
    recipe = SiteRecipe(config=joined, run_path=None, resume_round=None, task=None)

    # Act
    runtime = RayRuntime.start(recipe=recipe, site_names=["hospital_1", "hospital_2", "hospital_3"])
    try:
        workers = runtime.workers()
    finally:
        runtime.close()
    run_experiment(config=joined, out=tmp_path / "ray")

    # Assert
    assert len(workers) == 2 and len({w.node_id for w in workers}) == 2
    assert [w.sites for w in workers] == [("hospital_1", "hospital_3"), ("hospital_2",)]
    model = "model.safetensors"
    assert (tmp_path / "ray" / model).read_bytes() == (tmp_path / "inprocess" / model).read_bytes()
    assert not ray.is_initialized()
