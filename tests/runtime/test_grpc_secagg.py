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
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.config import load_config
from flmi.core.messages import ClientUpdate, TrainInstruction, TrainReply
from flmi.privacy.linear import LinearRule, linear_terms
from flmi.privacy.secagg import FixedPoint, quantised_vector
from flmi.privacy.wire import Payload
from flmi.runtime.grpc.coordinator import GrpcRuntime
from flmi.runtime.grpc.secure import EXIT_AT_STAGE_ENV, EXIT_AT_STAGE_STATUS
from flmi.runtime.grpc.server import deployment_task, serve
from flmi.simulation import run_experiment
from flmi.site.site import Site
from flmi.tasks.torch_params import params_copy
from flmi.tensorio import load_tensors
from tests.runtime.deploy_support import (
    Deployment,
    fed_tables,
    metrics,
    wait,
    wait_for,
    write_fed,
)

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


def test_dp_fedavg_noised_at_three_client_processes_under_secagg_keeps_the_in_process_ledger(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: DP-FedAvg with each site clipping and noising its own change, an
    # adaptive clip whose "not clipped" bits are summed through the masked sum too.
    config = load_config(
        _secagg_fed(
            deployment,
            dp="client",
            noise_at="site",
            noise_multiplier=1.0,
            clip_norm=0.5,
            adaptive_clip=True,
            secagg_clip=8.0,
        )
    )
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: each site's noise is OS randomness, fresh in each run, so the models differ;
    # the accounting does not depend on the draw and is the in-process run's bit for bit.
    assert statuses == [0, 0, 0] and wait(server) == 0
    history = metrics(tmp_path / "grpc-run")
    assert all(line["sites_failed"] == {} for line in history)
    grpc_privacy = json.loads((tmp_path / "grpc-run" / "summary.json").read_text())["privacy"]
    local = json.loads((tmp_path / "inprocess-run" / "summary.json").read_text())["privacy"]
    assert grpc_privacy["aggregation"] == "secagg" and grpc_privacy["noise_at"] == "site"
    assert grpc_privacy["noise_source"] == local["noise_source"] == "os_csprng"
    assert grpc_privacy["epsilon"] == local["epsilon"] and grpc_privacy["epsilon"] > 0
    assert grpc_privacy["sites"] == local["sites"]
    for entry in grpc_privacy["sites"].values():
        # The server saw only the masked sum: its view costs what the release costs.
        assert entry["epsilon_against_server"] == pytest.approx(entry["epsilon"])
    # Both clips adapted, each by its own noised count of unclipped updates.
    assert grpc_privacy["clip_norm"] != 0.5 and local["clip_norm"] != 0.5
    # Round 1 starts from the same weights with the same clipped changes: the models
    # differ by the sites' noise alone, (sum_a - sum_b) / m with each sum of the m shares
    # N(0, (z_u C)^2): std sqrt(2) z_u C / m, z_u = (1 - 1 / 4)^-1/2 (the count takes
    # its part of z = 1), C = 0.5, m = 3; quantisation adds about 1e-9.
    a, b = _checkpoint(tmp_path / "grpc-run", 1), _checkpoint(tmp_path / "inprocess-run", 1)
    gap = np.concatenate([(np.asarray(a[k], np.float64) - b[k]).ravel() for k in sorted(a)])
    z_u = (1 - 1 / 4) ** -0.5
    scaled = gap * 3 / (np.sqrt(2) * z_u * 0.5)
    assert scaled.size > 1000
    assert float(np.std(scaled)) == pytest.approx(1.0, rel=0.1)
    assert abs(float(np.mean(scaled))) < 5 / np.sqrt(scaled.size)


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
            # A round that aggregates nothing is tolerated here, so the run ends normally.
            federation={"min_sites": 2, "rounds": 1, "max_failed_rounds": 2},
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
    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    final, _ = load_tensors(path=run / "model.safetensors")
    for name, value in initial.items():
        np.testing.assert_array_equal(final[name], value)


def test_the_server_never_holds_an_unmasked_update_only_masked_words_and_sealed_shares(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the server runs in this process so that everything its runtime hands
    # the protocol (training replies, stage answers) is captured; the sites are processes.
    write_fed(
        deployment,
        fed_tables(
            site_names=SITES,
            federation={"min_sites": 2, "rounds": 1},
            privacy={"aggregation": "secagg"},
        ),
    )
    config = load_config(deployment.fed)
    trained: list[TrainReply] = []
    answers: list[tuple[str, str, bytes]] = []
    train, exchange = GrpcRuntime.train, GrpcRuntime.exchange

    def capture_train(self: GrpcRuntime, instructions: Any) -> Any:
        replies = train(self, instructions)
        trained.extend(replies.values())
        return replies

    def capture_exchange(self: GrpcRuntime, *, stage: str, rnd: int, payloads: Any) -> Any:
        replies = exchange(self, stage=stage, rnd=rnd, payloads=payloads)
        answers.extend((s, stage, r) for s, r in replies.items() if isinstance(r, bytes))
        return replies

    monkeypatch.setattr(GrpcRuntime, "train", capture_train)
    monkeypatch.setattr(GrpcRuntime, "exchange", capture_exchange)
    plain: dict[str, ClientUpdate] = {}  # each site's own update, from the in-process run
    site_train = Site.train

    def capture_plain(self: Site, instruction: TrainInstruction) -> Any:
        reply = site_train(self, instruction)
        assert isinstance(reply, ClientUpdate)
        plain[reply.site] = reply
        return reply

    monkeypatch.setattr(Site, "train", capture_plain)
    bound: list[str] = []
    server = threading.Thread(
        target=serve,
        kwargs={
            "config": config,
            "certs": deployment.ca / "server",
            "address": "127.0.0.1:0",
            "out": tmp_path / "run",
            "on_listening": bound.append,
        },
    )
    server.start()
    wait_for(lambda: bool(bound), what="the server to listen")
    clients = [deployment.start_client(site, bound[0]) for site in SITES]

    # Act
    run_experiment(config=config, out=None)  # the same round in process: each site's update
    statuses = [wait(client) for client in clients]
    server.join(timeout=120)

    # Assert: training replies carried no tensor; every stage answer is keys, sealed
    # shares, masked ring words or the shares that unmask the sum, never an update.
    assert statuses == [0, 0, 0] and not server.is_alive()
    assert len(trained) == 3 and all(
        isinstance(r, ClientUpdate) and not r.params and not r.extras and r.num_examples == 0
        for r in trained
    )
    assert sorted(stage for _, stage, _ in answers) == sorted(SECAGG_STAGES * 3)
    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    fixed = FixedPoint(clip=config.privacy.secagg_clip, bits=config.privacy.secagg_bits)
    for site, update in plain.items():
        terms = linear_terms(update, reference=initial, rule=LinearRule.WEIGHTED_MEAN)
        quantised = quantised_vector(terms, fixed)
        forms = [quantised.tobytes(), terms.weighted.tobytes()]
        forms += [np.ascontiguousarray(v).tobytes() for v in update.params.values() if v.size > 4]
        for _, stage, payload in answers:
            assert not any(form[:32] in payload for form in forms), (site, stage)
        (masked,) = [p for s, stage, p in answers if s == site and stage == "secagg/masked"]
        y = np.frombuffer(Payload.decode(masked, where="test").blobs["y"], dtype="<u8")
        assert y.size == quantised.size and np.mean(y == quantised) < 0.01
