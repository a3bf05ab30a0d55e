"""A hospital's own files in SITE.toml: loaded as its site, checked at register, kept local."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomli_w

from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.runtime.grpc.clientapp import build_client
from flmi.runtime.grpc.siteconf import load_site_settings
from flmi.runtime.grpc.sitedata import load_site_data, site_data_config
from tests.runtime.deploy_support import (
    Deployment,
    fed_tables,
    metrics,
    output,
    wait,
    write_fed,
)

TWO = ["hospital_1", "hospital_2"]
N_TEST = 7


def _npz(path: Path, *, rgb: bool = False, seed: int = 0) -> Path:
    """A tiny MedMNIST-style archive: 40 train, 10 val and 7 test images, two classes."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", 40), ("val", 10), ("test", N_TEST)):
        shape = (n, 16, 16, 3) if rgb else (n, 16, 16)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def _site_toml(dep: Deployment, site: str, data: dict[str, object]) -> Path:
    path = dep.root / f"{site}-own.toml"
    table = {
        "data": {"federation_config": str(dep.fed), **data},
        "site": {"state_dir": str(dep.root / "state" / site), "reconnect_timeout_s": 60.0},
    }
    path.write_text(tomli_w.dumps(table))
    return path


def test_a_site_loads_only_its_own_npz_with_its_own_splits(
    deployment: Deployment, tmp_path: Path
) -> None:
    fed = write_fed(deployment, fed_tables(site_names=TWO))
    _npz(tmp_path / "mine.npz")
    site_toml = _site_toml(deployment, "hospital_2", {"source": "medmnist", "path": "mine.npz"})

    settings = load_site_settings(site_toml, site="hospital_2")
    config = site_data_config(load_config(fed), table=settings.data, where=site_toml)
    data = load_site_data(config, site="hospital_2", where=site_toml)

    assert settings.data["path"] == str(tmp_path / "mine.npz")  # relative to SITE.toml
    assert list(data.sites) == ["hospital_2"]
    splits = data.sites["hospital_2"]
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (40, 10, N_TEST)
    assert splits.train.x.shape[1:] == (1, 16, 16)


def test_a_manifest_of_this_sites_images_is_split_by_its_own_fractions(
    deployment: Deployment, tmp_path: Path
) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    write_fed(deployment, fed_tables(site_names=TWO))
    rows = ["image,label"]
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    site_toml = _site_toml(
        deployment,
        "hospital_1",
        {
            "source": "manifest",
            "path": "manifest.csv",
            "label_column": "label",
            "test_fraction": 0.25,
            "val_fraction": 0.25,
        },
    )

    settings = load_site_settings(site_toml, site="hospital_1")
    config = site_data_config(load_config(deployment.fed), table=settings.data, where=site_toml)
    splits = load_site_data(config, site="hospital_1", where=site_toml).sites["hospital_1"]

    assert len(splits.train.y) + len(splits.val.y) + len(splits.test.y) == 20
    assert len(splits.test.y) == 5 and len(splits.val.y) > 0


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            {"source": "medmnist", "path": "missing/studies.npz"},
            "data.path = 'missing/studies.npz'",
        ),
        ({"source": "synthetic"}, "data.source = 'synthetic'"),
        ({"source": "manifest"}, "data.path is required"),
        ({"source": "csv", "path": "t.csv", "colour": 1}, "unknown key 'data.colour'"),
    ],
)
def test_bad_own_data_stops_the_client_before_it_connects_naming_the_key(
    deployment: Deployment, tmp_path: Path, data: dict[str, object], words: str
) -> None:
    write_fed(deployment, fed_tables(site_names=TWO))
    (tmp_path / "t.csv").write_text("a,label\n1,0\n")
    site_toml = _site_toml(deployment, "hospital_1", data)

    with pytest.raises(ConfigError) as refused:
        build_client(
            server="127.0.0.1:1",  # nothing listens: the error comes before any connection
            site="hospital_1",
            certs=deployment.bundle("hospital_1"),
            data=site_toml,
        )

    assert words in str(refused.value)
    assert str(site_toml) in str(refused.value)


def test_a_file_the_loader_cannot_read_names_the_site_file_and_the_key(
    deployment: Deployment, tmp_path: Path
) -> None:
    fed = write_fed(deployment, fed_tables(site_names=TWO))
    (tmp_path / "broken.npz").write_bytes(b"not an archive")
    site_toml = _site_toml(deployment, "hospital_1", {"source": "medmnist", "path": "broken.npz"})
    settings = load_site_settings(site_toml, site="hospital_1")
    config = site_data_config(load_config(fed), table=settings.data, where=site_toml)

    with pytest.raises(Exception, match="broken.npz") as refused:
        load_site_data(config, site="hospital_1", where=site_toml)

    assert str(site_toml) in str(refused.value)


@pytest.mark.slow
def test_a_hospital_trains_on_its_own_files_and_one_whose_images_differ_is_refused_at_register(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: the server's model takes grey images (the federation's generated hospitals);
    # hospital_1 brings its own grey .npz, hospital_2 its own RGB .npz, whose model has a
    # 3-channel first layer.
    write_fed(deployment, fed_tables(site_names=TWO, deploy={"wait_for_sites_s": 2.0}))
    grey = _npz(tmp_path / "hospital_1-studies.npz")
    _npz(tmp_path / "hospital_2-studies.npz", rgb=True, seed=1)
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)
    own = {
        site: _site_toml(deployment, site, {"source": "medmnist", "path": f"{site}-studies.npz"})
        for site in TWO
    }

    # Act
    refused = deployment.start_client("hospital_2", address, data=own["hospital_2"])
    accepted = deployment.start_client("hospital_1", address, data=own["hospital_1"])

    # Assert
    assert wait(refused) == 2
    message = " ".join(output(refused).split())  # the console wraps long lines
    assert "refused at register: schema_mismatch" in message
    assert "has shape (4, 3, 3, 3), expected (4, 1, 3, 3)" in message
    assert wait(accepted) == 0 and wait(server) == 0
    history = metrics(run)
    assert [line["round"] for line in history] == [1, 2]
    for line in history:
        assert sorted(line["per_site"]) == ["hospital_1"]
        scores = line["per_site"]["hospital_1"]
        assert scores["loss"] is not None  # scored on its own 7 test images
        # Its accuracy is sent only when neither count (correct, wrong) of the 7 is
        # 1 to report.min_count - 1 = 4, i.e. when it is 0 or 1; else it is withheld.
        assert scores["accuracy"] in (None, 0.0, 1.0)
    # The paths stayed at the sites: not in the server's log, audit trail or run directory.
    server_side = [p for p in run.rglob("*") if p.is_file()] + list(tmp_path.glob("server-*.log"))
    for path in server_side:
        text = path.read_bytes()
        assert b"studies.npz" not in text and str(grey).encode() not in text, path
