"""``flmi server`` records what it received under plain aggregation, and it replays exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.numpy import load_file

from flmi.forensics.reader import RecordReader
from flmi.forensics.replay import bitwise_equal, recorded_strategy, replay_round
from tests.runtime.deploy_support import Deployment, deployment, fed_tables, wait, write_fed

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]
__all__ = ["deployment"]  # the fixture, used by name


def test_a_deployed_server_records_each_update_and_replays_its_model_bit_for_bit(
    deployment: Deployment, tmp_path: Path
) -> None:
    write_fed(deployment, fed_tables(site_names=SITES, record={"updates": True}))
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]
    # Generous deadlines: on a loaded 2-core machine three clients and a server take minutes.
    assert [wait(c, timeout_s=600) for c in clients] == [0, 0, 0]
    assert wait(server, timeout_s=600) == 0

    reader = RecordReader(run_dir=tmp_path / "grpc-run")
    assert reader.rounds() == [1, 2] and reader.sites == SITES
    assert [u.site for u in reader.read(2).updates] == SITES
    final = load_file(str(tmp_path / "grpc-run" / "model.safetensors"))
    assert bitwise_equal(replay_round(reader, recorded_strategy(reader), 2), final)
