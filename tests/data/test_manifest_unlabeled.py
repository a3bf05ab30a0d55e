"""Manifests with unannotated images: ``data.empty_labels = "unlabeled"``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flmi.config import TransformsConfig, config_from_dict
from flmi.core.errors import ConfigError, DataError
from flmi.data.manifest import load_manifest
from flmi.data.sources import load_data
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables
from tests.data.test_manifest import grey, write_manifest, write_png

HEADER = ["image", "label", "site", "split"]


def three_hospitals(root: Path, *, unlabeled_site: str = "east", n: int = 12) -> Path:
    """Three hospitals of ``n`` PNGs each; ``unlabeled_site``'s training images have no label.

    Every hospital labels its validation and test images (rows 0-3 of each:
    two for val, two for test); the rest are training images.
    """
    rows = []
    for site in ("north", "south", "east"):
        for k in range(n):
            rel = f"images/{site}/img_{k}.png"
            pixels = grey(40 + 15 * k)
            if k % 2:
                pixels[2:6, 2:6] = 250  # a bright blob: class 1
            write_png(root / rel, pixels)
            split = "val" if k < 2 else "test" if k < 4 else "train"
            label = "" if site == unlabeled_site and split == "train" else str(k % 2)
            rows.append([rel, label, site, split])
    return write_manifest(root / "manifest.csv", HEADER, rows)


def _tables(root: Path, **federation: object) -> dict:
    return tiny_tables(
        data={
            "source": "manifest",
            "path": str(root / "manifest.csv"),
            "label_column": "label",
            "site_column": "site",
            "split_column": "split",
            "empty_labels": "unlabeled",
        },
        partition={"method": "natural", "num_sites": 3, "min_examples_per_site": 1},
        federation={"min_sites": 2, "local_steps": 2, **federation},
        report={"bootstrap_resamples": 0},
    )


def _load(path: Path, *, empty_labels: str) -> object:
    """Load a manifest with image, label, site and split columns."""
    return load_manifest(
        path=path,
        image_column="image",
        label_column="label",
        site_column="site",
        split_column="split",
        transforms=TransformsConfig(),
        empty_labels=empty_labels,
    )


def test_an_empty_label_is_an_error_that_names_the_row_and_the_setting(tmp_path: Path) -> None:
    # Arrange
    path = three_hospitals(tmp_path)

    # Act / Assert
    with pytest.raises(DataError, match=r"row 30: column 'label' is empty.*empty_labels"):
        _load(path, empty_labels="error")


def test_rows_without_a_label_become_their_sites_unlabeled_training_images(
    tmp_path: Path,
) -> None:
    # Arrange
    three_hospitals(tmp_path)
    config = config_from_dict(_tables(tmp_path))

    # Act
    data = load_data(config)

    # Assert: east trains on 8 unlabeled images and keeps its labeled val and test.
    east = data.sites["east"]
    assert len(east.train) == 0 and east.num_unlabeled == 8
    assert east.unlabeled is not None and east.unlabeled.shape == (8, 1, 8, 8)
    assert len(east.val) == 2 and len(east.test) == 2
    for site in ("north", "south"):
        assert len(data.sites[site].train) == 8 and data.sites[site].num_unlabeled == 0
        assert set(data.sites[site].train.y.tolist()) == {0, 1}
    assert len(data.central_test) == 6


def test_an_unlabeled_image_in_a_test_split_is_refused(tmp_path: Path) -> None:
    # Arrange
    write_png(tmp_path / "a.png", grey(10))
    write_png(tmp_path / "b.png", grey(90))
    path = write_manifest(
        tmp_path / "m.csv", HEADER, [["a.png", "0", "x", "train"], ["b.png", "", "x", "test"]]
    )

    # Act / Assert
    with pytest.raises(DataError, match=r"row 3: an image without a label cannot be in the 'test'"):
        _load(path, empty_labels="unlabeled")


def _north_and_unannotated_east(root: Path) -> dict:
    """North labels its 6 images; east labels none of its 6 (no split column)."""
    rows = []
    for site in ("north", "east"):
        for k in range(6):
            rel = f"{site}_{k}.png"
            write_png(root / rel, grey(30 * k + 10))
            rows.append([rel, "" if site == "east" else str(k % 2), site])
    write_manifest(root / "manifest.csv", ["image", "label", "site"], rows)
    tables = _tables(root, semi_supervised="fixmatch", pseudo_label_threshold=0.5)
    del tables["data"]["split_column"]
    tables["partition"]["num_sites"] = 2
    return tables


def test_a_hospital_that_labeled_nothing_trains_on_its_images_and_is_scored_nowhere(
    tmp_path: Path,
) -> None:
    # Arrange
    config = config_from_dict(_north_and_unannotated_east(tmp_path))

    # Act
    data = load_data(config)
    result = run_experiment(config=config, out=tmp_path / "run")

    # Assert
    east = data.sites["east"]
    assert (len(east.train), len(east.val), len(east.test), east.num_unlabeled) == (0, 0, 0, 6)
    assert len(data.central_test) == len(data.sites["north"].test)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    federated = [line for line in lines if line["arm"] == "federated"]
    assert all(line["sites_failed"] == {} for line in federated)
    assert all("east" in line["sites_sampled"] for line in federated)
    assert all(v is None for v in result.summary["arms"]["federated"]["per_site"]["east"].values())


def test_a_manifest_with_no_label_at_all_cannot_be_run(tmp_path: Path) -> None:
    # Arrange
    tables = _north_and_unannotated_east(tmp_path)
    rows = [[f"east_{k}.png", "", "east"] for k in range(6)]
    write_manifest(tmp_path / "manifest.csv", ["image", "label", "site"], rows)
    tables["partition"]["num_sites"] = 1
    tables["federation"]["min_sites"] = 1

    # Act / Assert
    with pytest.raises(ConfigError, match=r"no site holds a labeled example"):
        run_experiment(config=config_from_dict(tables), out=None)


def test_without_a_site_column_unlabeled_rows_are_shared_among_simulated_sites(
    tmp_path: Path,
) -> None:
    # Arrange: 30 images, the last 10 without labels.
    rows = []
    for k in range(30):
        write_png(tmp_path / f"i{k}.png", grey(8 * k + 5))
        rows.append([f"i{k}.png", "" if k >= 20 else str(k % 2)])
    write_manifest(tmp_path / "manifest.csv", ["image", "label"], rows)
    tables = _tables(tmp_path)
    del tables["data"]["site_column"], tables["data"]["split_column"]
    tables["partition"] = {"method": "iid", "num_sites": 3, "min_examples_per_site": 1}

    # Act
    a = load_data(config_from_dict(tables))
    b = load_data(config_from_dict(tables))

    # Assert: 4 + 3 + 3 of the 10, the same split every time, labels untouched.
    counts = [a.sites[s].num_unlabeled for s in ("site_1", "site_2", "site_3")]
    assert counts == [4, 3, 3]
    for s in a.sites:
        np.testing.assert_array_equal(a.sites[s].unlabeled, b.sites[s].unlabeled)
        assert set(a.sites[s].train.y.tolist()) <= {0, 1}
    assert (
        sum(len(a.sites[s].train) + len(a.sites[s].val) + len(a.sites[s].test) for s in a.sites)
        == 20
    )


def test_empty_labels_needs_a_label_column() -> None:
    tables = tiny_tables(
        data={
            "source": "manifest",
            "path": "m.csv",
            "mask_column": "mask",
            "empty_labels": "unlabeled",
        },
        partition={"method": "iid"},
    )
    with pytest.raises(ConfigError, match=r"data.empty_labels = 'unlabeled'.*label column"):
        config_from_dict(tables)


def test_an_unannotated_hospital_trains_semi_supervised_or_sits_out(tmp_path: Path) -> None:
    # Arrange
    three_hospitals(tmp_path)
    semi = config_from_dict(
        _tables(tmp_path, semi_supervised="fixmatch", pseudo_label_threshold=0.5)
    )
    plain = config_from_dict(_tables(tmp_path))

    # Act
    run_experiment(config=semi, out=tmp_path / "semi")
    run_experiment(config=plain, out=tmp_path / "plain")

    # Assert
    summary = json.loads((tmp_path / "semi" / "summary.json").read_text())
    assert summary["sites"]["east"]["n_train"] == 0
    assert summary["sites"]["east"]["n_unlabeled"] == 8
    lines = [json.loads(x) for x in (tmp_path / "semi" / "metrics.jsonl").read_text().splitlines()]
    assert all("east" in line["sites_sampled"] for line in lines if line["arm"] == "federated")
    left = json.loads((tmp_path / "plain" / "summary.json").read_text())["sites_left_out"]
    assert left == {"east": "no_labeled_training_data"}
