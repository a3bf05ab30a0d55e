"""A client process killed with -9 and started again continues from its saved site state."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from flmi.config import load_config
from flmi.simulation import run_experiment
from flmi.site.state import SiteState
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, wait_for, write_fed

pytestmark = pytest.mark.slow
TWO = ["hospital_1", "hospital_2"]


def test_a_client_killed_with_the_server_restarts_from_its_saved_state_and_the_model_is_unchanged(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: SCAFFOLD, whose sites keep a control variate between rounds: a site that
    # came back without its state would send different corrections and change the model.
    fed = write_fed(
        deployment,
        fed_tables(
            site_names=TWO,
            strategy={"name": "scaffold"},
            federation={"rounds": 4, "optimizer": "sgd", "momentum": 0.0},
        ),
    )
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    clients = {site: deployment.start_client(site, address) for site in TWO}
    straight = run_experiment(config=load_config(fed), out=tmp_path / "straight")
    state_dir = tmp_path / "state" / "hospital_2"

    # Act: once round 2 is on disk, kill -9 the server and hospital_2's client; start both
    # again (the server with --resume, the client with the same SITE.toml and state folder).
    wait_for(lambda: len(metrics(run)) >= 2, what="round 2 to be recorded")
    server.send_signal(signal.SIGKILL)
    clients["hospital_2"].send_signal(signal.SIGKILL)
    server.wait(timeout=60)
    clients["hospital_2"].wait(timeout=60)
    saved_before = SiteState.load(state_dir).round
    resumed, _ = deployment.start_server(out=run, address=address, resume=True)
    restarted = deployment.start_client("hospital_2", address)

    # Assert: every round once, both sites in rounds 3 and 4, and the same model and the
    # same site state, bit for bit, as the run that was never interrupted.
    assert wait(resumed) == 0
    assert wait(restarted) == 0 and wait(clients["hospital_1"]) == 0
    assert saved_before >= 2
    history = metrics(run)
    assert [line["round"] for line in history] == [1, 2, 3, 4]
    assert [sorted(line["per_site"]) for line in history[2:]] == [TWO, TWO]
    assert all(line["sites_failed"] == {} for line in history[2:])
    assert (run / "model.safetensors").read_bytes() == (
        tmp_path / "straight" / "model.safetensors"
    ).read_bytes()
    restored = SiteState.load(state_dir)
    simulated = SiteState.load(tmp_path / "straight" / "sites" / "hospital_2")
    assert restored.round == simulated.round == 4
    assert sorted(restored.tensors) == sorted(simulated.tensors) and restored.tensors
    for name, value in simulated.tensors.items():
        np.testing.assert_array_equal(restored.tensors[name], value)
    assert straight.path is not None
