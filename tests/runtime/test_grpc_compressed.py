"""Compressed updates over gRPC: the bytes on the wire are the bytes the in-process run counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flmi.config import load_config
from flmi.simulation import run_experiment
from tests.runtime.deploy_support import Deployment, fed_tables, metrics, wait, write_fed

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]
#: Generous room for one reply's protobuf header (ticket, metrics, tensor spec).
HEADER_ROOM = 1024


def _train_reply_sizes(audit: Path) -> dict[int, int]:
    """``{round: bytes of the train replies the server received}`` from its audit log."""
    lines = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    last_out: dict[str, str] = {}
    sizes: dict[int, int] = {}
    for e in lines:
        if e["direction"] == "out":
            last_out[e["peer"]] = e["message"]
        elif e["message"] == "Reply" and last_out.get(e["peer"]) == "Instruction:train":
            sizes[e["round"]] = sizes.get(e["round"], 0) + e["bytes"]
    return sizes


def test_top_k_updates_cross_the_grpc_wire_compressed_and_count_as_in_process(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: top-k 10 % with error feedback (deterministic: no rounding randomness).
    compression: dict[str, Any] = {"method": "topk", "fraction": 0.1}
    config = load_config(
        write_fed(deployment, fed_tables(site_names=SITES, compression=compression))
    )
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: both runs count the same compressed bytes, and the same model comes out.
    assert statuses == [0, 0, 0] and wait(server) == 0
    over_grpc, in_process = metrics(tmp_path / "grpc-run"), metrics(tmp_path / "inprocess-run")
    assert [line["round"] for line in over_grpc] == [1, 2]
    assert all(line["sites_failed"] == {} for line in over_grpc)
    for g, s in zip(over_grpc, in_process, strict=True):
        assert g["bytes_up"] == s["bytes_up"]
        assert g["bytes_down"] == s["bytes_down"]
        # Each site was sent the full float32 model; it sent back about a fifth of it.
        assert g["bytes_up"] < g["bytes_down"] / 3
    grpc_model = (tmp_path / "grpc-run" / "model.safetensors").read_bytes()
    assert grpc_model == (tmp_path / "inprocess-run" / "model.safetensors").read_bytes()
    # What the server's audit log saw arrive: the compressed tensor plus a small header.
    wire = _train_reply_sizes(tmp_path / "grpc-run" / "audit.jsonl")
    for line in over_grpc:
        got = wire[line["round"]]
        assert line["bytes_up"] <= got <= line["bytes_up"] + len(SITES) * HEADER_ROOM
    # The error-feedback residual is kept in each site's checkpointed state.
    for site in SITES:
        sidecars = sorted((tmp_path / "state" / site).rglob("*.json"))
        kept = [json.loads(p.read_text()).get("tensors", {}) for p in sidecars]
        assert any(any(k.startswith("compression/residual/") for k in t) for t in kept)
