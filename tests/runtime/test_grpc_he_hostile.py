"""A hostile server over real processes: the key holder refuses every sum but the honest one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.deploy_support import Deployment, fed_tables, wait, write_fed

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]


def test_the_key_holder_refuses_a_hostile_servers_single_stale_and_forged_sums_over_grpc(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: three hospital processes; the server process turns hostile in round 2.
    write_fed(
        deployment,
        fed_tables(
            site_names=SITES,
            federation={"min_sites": 3, "rounds": 3, "local_steps": 1},
            privacy={"aggregation": "he", "he_key_holder": "hospital_2"},
        ),
    )
    result = tmp_path / "hostile.json"
    server, address = deployment.start_server(
        out=result, program=("tests.runtime.he_hostile_server",)
    )
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    statuses = [wait(client, timeout_s=300) for client in clients]

    # Assert: every hostile request was refused by the key holder, for its own reason ...
    assert wait(server) == 0 and statuses == [0, 0, 0]
    answers = json.loads(result.read_text())
    refusals = {
        "single": "would reveal too much",
        "stale": "round 1 is stale",
        "restamped": "is not attested by",
        "forged": "is not attested by",
        "wrong_sum": "is not attested by",
        "duplicated": "listed twice",
    }
    for attack, reason in refusals.items():
        assert answers[attack]["decrypted"] is False, attack
        assert reason in answers[attack]["message"], (attack, answers[attack])
    # ... while the honest sums of rounds 1 and 2, and the ordinary round 3, went through.
    assert answers["honest_1"] == {"decrypted": True, "values": answers["size"]}
    assert answers["honest_2"] == {"decrypted": True, "values": answers["size"]}
    assert answers["round_3"] == {"contributors": 3, "update": True, "errors": {}}
