"""Homomorphic aggregation over gRPC: client processes encrypt, the server process adds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flmi.config import config_from_dict, load_config
from flmi.runtime.grpc.server import deployment_task
from flmi.simulation import run_experiment
from flmi.tasks.torch_params import params_copy
from flmi.tensorio import load_tensors
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, write_fed

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]


def test_he_over_grpc_matches_plain_within_1e_6_and_the_server_held_no_secret_key(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: float64 weights, so that only CKKS's own error separates the two runs.
    tables = fed_tables(
        site_names=SITES,
        task={"dtype": "float64"},
        federation={"min_sites": 2, "rounds": 1},
        privacy={"aggregation": "he", "he_key_holder": "hospital_2"},
    )
    config = load_config(write_fed(deployment, tables))
    server, address = deployment.start_server(out=tmp_path / "he-run")
    clients = [deployment.start_client(site, address) for site in SITES]
    plain_tables = {**tables, "privacy": {"aggregation": "plain"}}

    # Act
    plain = run_experiment(config=config_from_dict(plain_tables), out=None)
    statuses = [wait(client) for client in clients]

    # Assert: the aggregate (the model's change in round 1) matches plain FedAvg's.
    assert statuses == [0, 0, 0] and wait(server) == 0
    he_model, _ = load_tensors(path=tmp_path / "he-run" / "model.safetensors")
    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    names = sorted(initial)
    he_change = np.concatenate([(he_model[k] - initial[k]).ravel() for k in names])
    plain_change = np.concatenate([(plain.params[k] - initial[k]).ravel() for k in names])
    assert np.linalg.norm(plain_change) > 0
    relative = np.linalg.norm(he_change - plain_change) / np.linalg.norm(plain_change)
    assert relative < 1e-6
    assert not np.array_equal(he_change, plain_change)  # it did go through CKKS
    # The server process checked every context it held and found no secret key.
    summary = json.loads((tmp_path / "he-run" / "summary.json").read_text())
    assert summary["privacy"]["aggregation"] == "he"
    assert summary["privacy"]["server_contexts"] >= 1
    assert summary["privacy"]["server_contexts_with_secret_key"] == 0
    (line,) = metrics(tmp_path / "he-run")
    assert line["sites_failed"] == {}
    assert line["bytes_up"] > 10 * sum(v.nbytes for v in initial.values()) * len(SITES)
