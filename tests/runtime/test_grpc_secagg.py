"""Secure aggregation over gRPC with real client processes on 127.0.0.1.

The server drives the same :class:`flmi.privacy.secagg.SecAggServer` as the
in-process runtime, through staged instructions; each client process answers
through :class:`flmi.privacy.site.SecureSite`. Masks cancel exactly in the ring
of integers modulo 2^64 and the fixed-point encoding is deterministic, so the
recovered sum, and so the final model, is the in-process run's bit for bit
although every mask is fresh randomness.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.config import load_config
from flmi.runtime.grpc.secure import EXIT_AT_STAGE_ENV, EXIT_AT_STAGE_STATUS
from flmi.simulation import run_experiment
from flmi.tensorio import load_tensors
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, write_fed

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]
SECAGG_STAGES = ["secagg/advertise", "secagg/share", "secagg/masked", "secagg/unmask"]


def _secagg_fed(dep: Deployment, **privacy: Any) -> Path:
    return write_fed(
        dep,
        fed_tables(
            site_names=SITES,
            federation={"min_sites": 2},
            privacy={"aggregation": "secagg", **privacy},
        ),
    )


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoint(run: Path, rnd: int) -> dict[str, np.ndarray]:
    tensors, _ = load_tensors(path=run / "checkpoints" / f"federated-round-{rnd:05d}.safetensors")
    return {k.removeprefix("params/"): v for k, v in tensors.items() if k.startswith("params/")}


def _staged_lines(lines: list[dict[str, Any]], *, kind: str, direction: str) -> list[Any]:
    return [
        (e["round"], e["message"], e["bytes"], e["sha256"])
        for e in lines
        if e["direction"] == direction and e["message"].startswith(f"{kind}:staged:")
    ]


def test_secagg_with_three_client_processes_gives_the_in_process_model_bit_for_bit(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange
    config = load_config(_secagg_fed(deployment))
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    simulated = run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: same model, bit for bit, and every round aggregated all three sites.
    assert statuses == [0, 0, 0] and wait(server) == 0
    assert len({c.pid for c in clients}) == 3
    history = metrics(tmp_path / "grpc-run")
    assert [line["round"] for line in history] == [1, 2]
    assert all(line["sites_failed"] == {} for line in history)
    grpc_model = (tmp_path / "grpc-run" / "model.safetensors").read_bytes()
    assert grpc_model == (tmp_path / "inprocess-run" / "model.safetensors").read_bytes()
    final, _ = load_tensors(path=tmp_path / "grpc-run" / "model.safetensors")
    initial = _checkpoint(tmp_path / "grpc-run", 1)
    assert any(not np.array_equal(final[k], initial[k]) for k in final)
    for name, value in final.items():
        np.testing.assert_array_equal(value, simulated.params[name])
    # Protocol bytes are counted as in simulation (masked words, keys, shares; the
    # hexadecimal shares are random numbers, so their length varies by a few bytes).
    for grpc_line, simulated_line in zip(history, metrics(tmp_path / "inprocess-run"), strict=True):
        assert grpc_line["bytes_up"] == pytest.approx(simulated_line["bytes_up"], rel=1e-3)
    summary = json.loads((tmp_path / "grpc-run" / "summary.json").read_text())
    assert summary["privacy"]["aggregation"] == "secagg"
    # Audit: each stage of each round went to each site once and came back once, and
    # what one side logged sending (size, SHA-256) is what the other logged receiving.
    server_lines = _audit(tmp_path / "grpc-run" / "audit.jsonl")
    for site in SITES:
        site_lines = _audit(tmp_path / "state" / site / "audit.jsonl")
        at_server = [e for e in server_lines if e["peer"] == site]
        for kind, there, back in (("Instruction", "out", "in"), ("Reply", "in", "out")):
            sent = _staged_lines(at_server, kind=kind, direction=there)
            assert sent == _staged_lines(site_lines, kind=kind, direction=back)
            stages = Counter((rnd, message.split(":", 2)[2]) for rnd, message, _, _ in sent)
            assert stages == Counter((r, s) for r in (1, 2) for s in SECAGG_STAGES)
            assert all(size > 0 for _, _, size, _ in sent)


def test_a_client_killed_after_masking_is_left_out_and_the_survivors_recover_the_sum(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: hospital_3 exits (like kill -9) when round 1's unmask stage arrives,
    # after it has sent its masked input; the fault is injected by a test-only variable.
    config = load_config(_secagg_fed(deployment))
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    survivors = [deployment.start_client(site, address) for site in SITES[:2]]
    monkeypatch.setenv(EXIT_AT_STAGE_ENV, "secagg/unmask@1")
    victim = deployment.start_client("hospital_3", address)
    monkeypatch.delenv(EXIT_AT_STAGE_ENV)

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")  # no dropout
    victim_status = wait(victim)
    statuses = [wait(client) for client in survivors]

    # Assert: the run finished; round 1's sum holds hospital_3's masked input,
    # unmasked with the two survivors' shares: the in-process round 1 bit for bit.
    assert victim_status == EXIT_AT_STAGE_STATUS
    assert statuses == [0, 0] and wait(server) == 0
    history = metrics(run)
    assert [line["round"] for line in history] == [1, 2]
    assert history[0]["sites_failed"] == {"hospital_3": "unavailable"}
    assert history[1]["sites_failed"] == {"hospital_3": "unavailable"}
    recovered, expected = _checkpoint(run, 1), _checkpoint(tmp_path / "inprocess-run", 1)
    for name, value in expected.items():
        np.testing.assert_array_equal(recovered[name], value)
    after = _checkpoint(run, 2)  # round 2 aggregates the two survivors
    assert any(not np.array_equal(after[k], recovered[k]) for k in after)
    victim_audit = _audit(tmp_path / "state" / "hospital_3" / "audit.jsonl")
    sent = [e["message"] for e in victim_audit if e["direction"] == "out"]
    assert "Reply:staged:secagg/masked" in sent and "Reply:staged:secagg/unmask" not in sent


def test_fewer_survivors_than_the_threshold_refuse_the_round_and_leave_the_model_unchanged(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: threshold 3 of 3, and hospital_3 vanishes before it masks in round 1.
    write_fed(
        deployment,
        fed_tables(
            site_names=SITES,
            federation={"min_sites": 2, "rounds": 1},
            privacy={"aggregation": "secagg", "secagg_threshold": 3},
        ),
    )
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    survivors = [deployment.start_client(site, address) for site in SITES[:2]]
    monkeypatch.setenv(EXIT_AT_STAGE_ENV, "secagg/masked@1")
    victim = deployment.start_client("hospital_3", address)
    monkeypatch.delenv(EXIT_AT_STAGE_ENV)

    # Act
    victim_status = wait(victim)
    statuses = [wait(client) for client in survivors]

    # Assert: recovery is refused, said so, and round 1 left the model as it was.
    assert victim_status == EXIT_AT_STAGE_STATUS
    assert statuses == [0, 0] and wait(server) == 0
    log = (tmp_path / "server-0.log").read_text()
    assert "2 survivors" in log and "threshold 3" in log and "cannot be recovered" in log
    assert metrics(run)[0]["sites_failed"] == {"hospital_3": "unavailable"}
    config = load_config(deployment.fed)
    from flmi.runtime.grpc.server import deployment_task
    from flmi.tasks.torch_params import params_copy

    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    final, _ = load_tensors(path=run / "model.safetensors")
    for name, value in initial.items():
        np.testing.assert_array_equal(final[name], value)
