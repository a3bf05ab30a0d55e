"""Same numbers: a federation over gRPC with mTLS equals the in-process run, bit for bit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flmi.config import load_config
from flmi.runtime.grpc.server import deployment_task
from flmi.simulation import run_experiment
from flmi.tasks.torch_params import params_copy
from flmi.tensorio import load_tensors
from tests.runtime.deploy_support import (
    Deployment,
    fed_tables,
    metrics,
    wait,
    write_fed,
)

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]


def test_three_client_processes_over_mtls_give_the_in_process_model_bit_for_bit(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: a model of several MB (float64, width 64) streamed in 64 KiB chunks.
    fed = write_fed(
        deployment,
        fed_tables(
            site_names=SITES,
            task={"width": 64, "dtype": "float64"},
            deploy={
                "chunk_bytes": 65536,
                "max_message_bytes": 65536 + 65536,
                "round_timeout_s": 600.0,
            },
        ),
    )
    config = load_config(fed)
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    simulated = run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]
    server_status = wait(server)

    # Assert
    pids = {client.pid for client in clients}
    assert len(pids) == 3 and server.pid not in pids and os.getpid() not in pids
    assert statuses == [0, 0, 0] and server_status == 0
    history = metrics(tmp_path / "grpc-run")
    assert [line["round"] for line in history] == [1, 2]
    assert all(line["sites_failed"] == {} for line in history)
    assert all(sorted(line["per_site"]) == SITES for line in history)
    grpc_model = (tmp_path / "grpc-run" / "model.safetensors").read_bytes()
    assert grpc_model == (tmp_path / "inprocess-run" / "model.safetensors").read_bytes()
    final, _ = load_tensors(path=tmp_path / "grpc-run" / "model.safetensors")
    size = sum(v.nbytes for v in final.values())
    assert size > 4 * 2**20  # several MB, i.e. dozens of 64 KiB chunks each way
    for name, value in final.items():
        np.testing.assert_array_equal(value, simulated.params[name])
    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    moved = [name for name in initial if not np.array_equal(initial[name], final[name])]
    assert len(moved) == len(initial)  # every tensor moved away from its initial value


def _round_params(run: Path, rnd: int) -> dict[str, np.ndarray]:
    """The global weights a run checkpointed after round ``rnd``."""
    tensors, _ = load_tensors(path=run / "checkpoints" / f"federated-round-{rnd:05d}.safetensors")
    return {
        k.removeprefix("params/"): np.asarray(v, np.float64)
        for k, v in tensors.items()
        if k.startswith("params/")
    }


def _privacy(run: Path) -> dict[str, Any]:
    block: dict[str, Any] = json.loads((run / "summary.json").read_text())["privacy"]
    return block


def _flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(params[k], np.float64).ravel() for k in sorted(params)])


def test_dp_fedavg_over_grpc_differs_from_the_in_process_model_by_the_servers_fresh_noise_alone(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: DP-FedAvg noised by the server. The noise is OS randomness, fresh in each
    # run, so the two runs' models differ; everything else (training, clipping,
    # accounting) is the same computation.
    privacy = {"dp": "client", "noise_multiplier": 1.0, "clip_norm": 0.5}
    fed = write_fed(deployment, fed_tables(site_names=SITES, privacy=privacy))
    config = load_config(fed)
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: the same accounting bit for bit (epsilon, each site's ledger) ...
    assert statuses == [0, 0, 0] and wait(server) == 0
    spent, expected = _privacy(tmp_path / "grpc-run"), _privacy(tmp_path / "inprocess-run")
    assert spent["noise_source"] == expected["noise_source"] == "os_csprng"
    assert spent["epsilon"] == expected["epsilon"] and 0 < spent["epsilon"] < float("inf")
    assert spent["sites"] == expected["sites"]
    # ... and after round 1, from the same weights and the same clipped updates, the models
    # differ by the two draws of the noise alone: (noise_a - noise_b) / m, whose values
    # have std sqrt(2) z C / m, z = 1, C = 0.5, m = 3.
    gap = _flat(_round_params(tmp_path / "grpc-run", 1)) - _flat(
        _round_params(tmp_path / "inprocess-run", 1)
    )
    scaled = gap * 3 / (math.sqrt(2) * 1.0 * 0.5)
    assert scaled.size > 1000
    assert float(np.std(scaled)) == pytest.approx(1.0, rel=0.1)
    assert abs(float(np.mean(scaled))) < 5 / math.sqrt(scaled.size)


def test_dp_sgd_over_grpc_gives_the_in_process_ledgers_and_a_model_within_the_noise_spread(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: DP-SGD at every site. Data order and Poisson samples are seeded, so the
    # accounting is the in-process run's; the gradient noise is fresh OS randomness.
    privacy = {"dp": "sample", "noise_multiplier": 1.1, "max_grad_norm": 1.0}
    fed = write_fed(deployment, fed_tables(site_names=SITES, privacy=privacy))
    config = load_config(fed)
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act: the in-process run twice, to measure how far fresh noise alone moves the model.
    run_experiment(config=config, out=tmp_path / "inprocess-a")
    run_experiment(config=config, out=tmp_path / "inprocess-b")
    statuses = [wait(client) for client in clients]

    # Assert: the same epsilon and per-site ledgers, bit for bit ...
    assert statuses == [0, 0, 0] and wait(server) == 0
    spent, expected = _privacy(tmp_path / "grpc-run"), _privacy(tmp_path / "inprocess-a")
    assert spent["dp"] == "sample" and spent["noise_source"] == "os_csprng"
    assert spent["epsilon"] == expected["epsilon"] and 0 < spent["epsilon"] < float("inf")
    assert spent["sites"] == expected["sites"] == _privacy(tmp_path / "inprocess-b")["sites"]
    # ... and a model as far from the in-process one as another draw of the noise is.
    final = {
        run: _flat(load_tensors(path=tmp_path / run / "model.safetensors")[0])
        for run in ("grpc-run", "inprocess-a", "inprocess-b")
    }
    spread = float(np.linalg.norm(final["inprocess-b"] - final["inprocess-a"]))
    gap = float(np.linalg.norm(final["grpc-run"] - final["inprocess-a"]))
    assert spread > 0 and gap > 0  # fresh noise in every run, over gRPC too
    assert 0.5 * spread < gap < 2.0 * spread
