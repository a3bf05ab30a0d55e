"""Same numbers: a federation over gRPC with mTLS equals the in-process run, bit for bit."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


@pytest.mark.parametrize(
    ("privacy", "ledger"),
    [
        ({"dp": "sample", "noise_multiplier": 1.1, "max_grad_norm": 1.0}, "DP-SGD at each site"),
        ({"dp": "client", "noise_multiplier": 1.0, "clip_norm": 0.5}, "DP-FedAvg at the server"),
    ],
)
def test_differential_privacy_over_grpc_gives_the_in_process_model_and_privacy_ledger(
    deployment: Deployment, tmp_path: Path, privacy: dict[str, object], ledger: str
) -> None:
    # Arrange
    fed = write_fed(deployment, fed_tables(site_names=SITES, privacy=privacy))
    config = load_config(fed)
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: the noise (seeded per site, round and party) and the accounting are the
    # in-process run's, so the model is the same bit for bit and summary.json reports
    # the same epsilon and per-site ledgers.
    assert statuses == [0, 0, 0] and wait(server) == 0, ledger
    grpc_model = (tmp_path / "grpc-run" / "model.safetensors").read_bytes()
    assert grpc_model == (tmp_path / "inprocess-run" / "model.safetensors").read_bytes()
    spent = json.loads((tmp_path / "grpc-run" / "summary.json").read_text())["privacy"]
    expected = json.loads((tmp_path / "inprocess-run" / "summary.json").read_text())["privacy"]
    assert spent["dp"] == privacy["dp"]
    assert spent["epsilon"] == expected["epsilon"] and 0 < spent["epsilon"] < float("inf")
    assert spent.get("sites") == expected.get("sites")
