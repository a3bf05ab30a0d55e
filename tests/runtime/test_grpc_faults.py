"""Faults with real processes on 127.0.0.1: a killed client, a killed and resumed server."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, wait_for, write_fed

pytestmark = pytest.mark.slow
THREE = ["hospital_1", "hospital_2", "hospital_3"]
TWO = ["hospital_1", "hospital_2"]


def _audit(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_client_killed_mid_round_is_left_out_and_the_run_finishes_with_the_other_two(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: hospital_3 trains for many steps, so it is still training when it is killed.
    write_fed(
        deployment,
        fed_tables(site_names=THREE, sites={"hospital_3": {"local_steps": 5000}}),
    )
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    clients = {site: deployment.start_client(site, address) for site in THREE}
    victim_audit = tmp_path / "state" / "hospital_3" / "audit.jsonl"

    # Act: kill -9 hospital_3 once it holds round 1's training instruction.
    wait_for(
        lambda: any(e["message"] == "Instruction:train" for e in _audit(victim_audit)),
        what="hospital_3 to receive round 1",
    )
    clients["hospital_3"].send_signal(signal.SIGKILL)

    # Assert
    assert wait(server) == 0
    assert wait(clients["hospital_1"]) == 0 and wait(clients["hospital_2"]) == 0
    history = metrics(run)
    assert [line["round"] for line in history] == [1, 2]
    assert history[0]["sites_failed"] == {"hospital_3": "unavailable"}
    assert sorted(history[0]["per_site"]) == ["hospital_1", "hospital_2"]
    assert (run / "model.safetensors").is_file()
    server_audit = _audit(run / "audit.jsonl")
    assert not any(e["peer"] == "hospital_3" and e["message"] == "Reply" for e in server_audit)
    assert "hospital_3 lost its connection" in (tmp_path / "server-0.log").read_text()


def test_server_killed_after_round_2_resumes_without_a_gap_or_a_duplicate_round(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange
    fed = write_fed(deployment, fed_tables(site_names=TWO, federation={"rounds": 4}))
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    clients = [deployment.start_client(site, address) for site in TWO]
    straight = run_experiment(config=load_config(fed), out=tmp_path / "straight")

    # Act: kill -9 the server once round 2 is on disk, then restart it with --resume.
    wait_for(lambda: len(metrics(run)) >= 2, what="round 2 to be recorded")
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=60)
    resumed, _ = deployment.start_server(out=run, address=address, resume=True)

    # Assert
    assert wait(resumed) == 0
    assert [wait(client) for client in clients] == [0, 0]
    rounds = [line["round"] for line in metrics(run)]
    assert rounds == [1, 2, 3, 4]
    assert all(line["sites_failed"] == {} for line in metrics(run)[2:])
    resumed_model = (run / "model.safetensors").read_bytes()
    assert resumed_model == (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert straight.path is not None


def test_sigterm_stops_a_waiting_server_cleanly_and_it_can_resume(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: a server waiting for its sites.
    write_fed(deployment, fed_tables(site_names=TWO))
    run = tmp_path / "run"
    server, _ = deployment.start_server(out=run)

    # Act
    server.send_signal(signal.SIGTERM)

    # Assert
    assert wait(server, timeout_s=60) == 0
    assert "resume with --resume" in (tmp_path / "server-0.log").read_text()
    assert (run / "config.toml").is_file() and metrics(run) == []
