"""Semi-supervised sites in a deployment: an unlabeled hospital joins with ``flmi client``.

The client builds its split from the federation's config as a simulated site
would, ``[sites.NAME] labeled = false`` included, and trains with the
semi-supervised settings the server's training plan carries. Real processes on
127.0.0.1; the in-process run is the reference, bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.runtime.grpc.clientapp import build_client
from flmi.simulation import run_experiment
from tests.data.test_manifest import write_manifest, write_png
from tests.runtime.deploy_support import (
    Deployment,
    fed_tables,
    metrics,
    output,
    wait,
    write_fed,
)

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]
SEMI: dict[str, Any] = {
    "semi_supervised": "fixmatch",
    "pseudo_label_teacher": "global",
    "distribution_alignment": True,
    "pseudo_label_selection": "class_quota",
    "pseudo_label_quota": 1.0,
    "soft_pseudo_labels": True,
    "unlabeled_aggregation": "add",
    "unlabeled_weight": 0.25,
    "min_sites": 2,
}


def _fed(dep: Deployment, **federation: Any) -> Path:
    return write_fed(
        dep,
        fed_tables(
            site_names=SITES,
            federation=federation,
            sites={"hospital_3": {"labeled": False}},
        ),
    )


def test_an_unlabeled_hospital_joins_over_grpc_and_the_model_is_the_in_process_one(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange
    config = load_config(_fed(deployment, **SEMI))
    server, address = deployment.start_server(out=tmp_path / "grpc-run")
    clients = [deployment.start_client(site, address) for site in SITES]

    # Act
    run_experiment(config=config, out=tmp_path / "inprocess-run")
    statuses = [wait(client) for client in clients]

    # Assert: hospital_3 trained on images alone (no labeled example, every
    # unlabeled image used) in every round, and the model is the simulation's.
    assert statuses == [0, 0, 0] and wait(server) == 0
    history = metrics(tmp_path / "grpc-run")
    assert [line["round"] for line in history] == [1, 2]
    assert all(line["sites_failed"] == {} for line in history)
    assert all(sorted(line["sites_sampled"]) == SITES for line in history)
    grpc_model = (tmp_path / "grpc-run" / "model.safetensors").read_bytes()
    assert grpc_model == (tmp_path / "inprocess-run" / "model.safetensors").read_bytes()
    inprocess = json.loads((tmp_path / "inprocess-run" / "summary.json").read_text())
    assert inprocess["sites"]["hospital_3"]["n_train"] == 0
    assert inprocess["sites"]["hospital_3"]["n_unlabeled"] > 0


def test_an_unlabeled_hospital_without_semi_supervision_is_refused_before_it_connects(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: hospital_3 has no labels and the federation trains none without them.
    _fed(deployment, min_sites=2)
    _, address = deployment.start_server(out=tmp_path / "grpc-run")

    # Act
    client = deployment.start_client("hospital_3", address)
    status = wait(client)

    # Assert
    assert status != 0
    text = output(client)
    assert "--site hospital_3" in text and "federation.semi_supervised" in text
    assert "deploy.sites" in text


def _unannotated_hospital(
    dep: Deployment, root: Path, site: str, *, labels_for_scoring: bool = True
) -> Path:
    """``site``'s own PNGs: 24 training images without labels, and 4 for val and test.

    Without ``labels_for_scoring`` those 4 are unlabeled training images too.
    """
    rng = np.random.default_rng(7)
    rows = []
    for k in range(28):
        rel = f"{site}/img_{k}.png"
        write_png(root / rel, rng.integers(0, 256, (16, 16), dtype=np.uint8))
        split = "val" if k < 2 else "test" if k < 4 else "train"
        if not labels_for_scoring:
            split = "train"  # an image without a label can only train
        rows.append([rel, str(k % 2) if split != "train" else "", split])
    manifest = write_manifest(root / f"{site}.csv", ["image", "label", "split"], rows)
    path = dep.root / f"{site}-own.toml"
    table = {
        "data": {
            "federation_config": str(dep.fed),
            "source": "manifest",
            "path": str(manifest),
            "label_column": "label",
            "split_column": "split",
            "empty_labels": "unlabeled",
        },
        "site": {"state_dir": str(dep.root / "state" / site), "reconnect_timeout_s": 60.0},
    }
    path.write_text(tomli_w.dumps(table))
    return path


@pytest.mark.parametrize("labels_for_scoring", [True, False])
def test_a_hospital_with_its_own_unannotated_images_trains_semi_supervised_over_grpc(
    deployment: Deployment, tmp_path: Path, labels_for_scoring: bool
) -> None:
    # Arrange: hospitals 1 and 2 take their labeled split of the federation's data;
    # hospital_3 brings its own images, of which only the 4 for val and test are
    # labeled, or none at all (then it trains and is scored nowhere).
    write_fed(deployment, fed_tables(site_names=SITES, federation=SEMI))
    own = _unannotated_hospital(
        deployment,
        tmp_path / "hospital_3-files",
        "hospital_3",
        labels_for_scoring=labels_for_scoring,
    )
    run = tmp_path / "grpc-run"
    server, address = deployment.start_server(out=run)
    clients = [deployment.start_client(site, address) for site in SITES[:2]]
    clients.append(deployment.start_client("hospital_3", address, data=own))

    # Act
    statuses = [wait(client) for client in clients]

    # Assert: hospital_3 took part in every round, scored on its 2 labeled test images
    # (a loss; its accuracy is withheld: 2 images give counts under report.min_count)
    # or, with none, not scored (its metrics are null, the others' are not).
    assert statuses == [0, 0, 0] and wait(server) == 0
    history = metrics(run)
    assert [line["round"] for line in history] == [1, 2]
    for line in history:
        assert line["sites_failed"] == {} and sorted(line["sites_sampled"]) == SITES
        scores = line["per_site"]["hospital_3"]
        assert scores["accuracy"] is None
        if labels_for_scoring:
            assert scores["loss"] is not None and math.isfinite(scores["loss"])
        else:
            assert scores["loss"] is None and line["per_site"]["hospital_1"]["loss"] is not None
    site_log = output(clients[2])
    assert "nothing learnt" not in site_log


def test_own_unannotated_images_without_semi_supervision_are_refused_before_connecting(
    deployment: Deployment, tmp_path: Path
) -> None:
    write_fed(deployment, fed_tables(site_names=SITES, federation={"min_sites": 2}))
    own = _unannotated_hospital(deployment, tmp_path / "files", "hospital_3")

    refusal = r"--site hospital_3: its own data .*federation.semi_supervised"
    with pytest.raises(ConfigError, match=refusal):
        build_client(
            server="127.0.0.1:1",  # nothing listens: the error comes before any connection
            site="hospital_3",
            certs=deployment.bundle("hospital_3"),
            data=own,
        )
