"""The manifest loader: a CSV of image paths, labels or masks, and sites."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flmi.config import TransformsConfig, config_from_dict
from flmi.core.errors import ConfigError, DataError
from flmi.data.manifest import load_manifest, manifest_federated_data, split_manifest
from flmi.data.sources import load_data
from tests.conftest import tiny_tables
from tests.data.dicom_factory import write_series


def write_png(path: Path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name if path.parent.name == "" else str(path)


def write_manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def grey(value: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    pixels = np.full(size, value, dtype=np.uint8)
    pixels[0, 0] = 0  # a minimum, so min-max scaling is well defined
    pixels[-1, -1] = 255
    return pixels


@pytest.fixture
def two_sites(tmp_path: Path) -> Path:
    """12 PNGs at two sites (6 each), labels 0/1 alternating; paths relative to the CSV."""
    rows = []
    for k in range(12):
        site = "north" if k < 6 else "south"
        rel = f"images/{site}/img_{k}.png"
        write_png(tmp_path / rel, grey(20 * k))
        rows.append([rel, str(k % 2), site])
    return write_manifest(tmp_path / "manifest.csv", ["image", "label", "site"], rows)


def load(path: Path, **keys: object) -> object:
    args: dict[str, object] = {
        "path": path,
        "image_column": "image",
        "label_column": "label",
        "transforms": TransformsConfig(),
    }
    args.update(keys)
    return load_manifest(**args)  # type: ignore[arg-type]


def test_manifest_loads_images_labels_and_sites_in_row_order(two_sites: Path) -> None:
    loaded = load_manifest(
        path=two_sites,
        image_column="image",
        label_column="label",
        site_column="site",
        transforms=TransformsConfig(intensity="none"),
    )

    assert loaded.images.shape == (12, 1, 8, 8) and loaded.images.dtype == np.float32
    assert loaded.labels is not None and loaded.labels.tolist() == [k % 2 for k in range(12)]
    assert loaded.sites.tolist() == ["north"] * 6 + ["south"] * 6
    assert loaded.images[3, 0, 4, 4] == 60.0  # grey(20 * 3), read without intensity scaling
    assert loaded.unreadable == {"north": {}, "south": {}}


def test_text_labels_are_numbered_in_sorted_order(tmp_path: Path) -> None:
    rows = [[write_png(tmp_path / f"{k}.png", grey(k)), name] for k, name in enumerate("bab")]
    path = write_manifest(tmp_path / "m.csv", ["image", "label"], rows)

    loaded = load_manifest(
        path=path, image_column="image", label_column="label", transforms=TransformsConfig()
    )

    assert loaded.classes == ["a", "b"]
    assert loaded.labels is not None and loaded.labels.tolist() == [1, 0, 1]


def test_rgb_jpeg_averaged_to_one_channel_and_resized(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=100)
    path = write_manifest(tmp_path / "m.csv", ["image", "label"], [["photo.jpg", "0"]])

    loaded = load_manifest(
        path=path,
        image_column="image",
        label_column="label",
        transforms=TransformsConfig(channels=1, intensity="none", spatial_size=[10, 10]),
    )

    assert loaded.images.shape == (1, 1, 10, 10)
    np.testing.assert_allclose(loaded.images[0, 0], 60.0, atol=2.0)  # JPEG rounding


def test_masks_are_loaded_with_nearest_neighbour_resizing(tmp_path: Path) -> None:
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 2
    write_png(tmp_path / "mask.png", mask)
    write_png(tmp_path / "img.png", grey(100, (16, 16)))
    path = write_manifest(tmp_path / "m.csv", ["image", "mask"], [["img.png", "mask.png"]])

    loaded = load_manifest(
        path=path,
        image_column="image",
        mask_column="mask",
        transforms=TransformsConfig(spatial_size=[8, 8]),
    )

    assert loaded.labels is None
    assert loaded.masks is not None and loaded.masks.shape == (1, 1, 8, 8)
    assert loaded.masks.dtype == np.int64
    assert set(np.unique(loaded.masks).tolist()) == {0, 2}  # no interpolated label values
    assert loaded.masks[0, 0, 2:6, 2:6].tolist() == [[2] * 4] * 4


def test_dicom_series_folder_and_png_rows_share_a_3d_pipeline(tmp_path: Path) -> None:
    stored = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    write_series(tmp_path / "ct_1", stored=stored, intercept=-1024.0)
    write_png(tmp_path / "xray.png", grey(50, (4, 4)))
    path = write_manifest(
        tmp_path / "m.csv", ["image", "label"], [["ct_1", "1"], ["xray.png", "0"]]
    )

    loaded = load_manifest(
        path=path,
        image_column="image",
        label_column="label",
        transforms=TransformsConfig(spatial_size=[4, 4, 2], intensity="none"),
    )

    assert loaded.images.shape == (2, 1, 4, 4, 2)
    np.testing.assert_allclose(loaded.images[0, 0], np.transpose(stored, (2, 1, 0)) - 1024.0)


def test_unreadable_files_skipped_are_counted_per_site_and_named_only_in_the_site_log(
    two_sites: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (two_sites.parent / "images/north/img_1.png").write_bytes(b"not a png at all")
    (two_sites.parent / "images/south/img_7.png").unlink()
    (two_sites.parent / "images/south/img_8.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    with caplog.at_level(logging.WARNING, logger="flmi.site.data"):
        loaded = load_manifest(
            path=two_sites,
            image_column="image",
            label_column="label",
            site_column="site",
            transforms=TransformsConfig(),
            on_unreadable="skip",
        )

    assert len(loaded) == 9
    assert loaded.unreadable == {"north": {"corrupt": 1}, "south": {"corrupt": 1, "missing": 1}}
    logged = [r for r in caplog.records if r.name == "flmi.site.data"]
    assert {"img_1.png", "img_7.png", "img_8.png"} <= {
        name
        for r in logged
        for name in ("img_1.png", "img_7.png", "img_8.png")
        if name in r.getMessage()
    }


def test_unreadable_file_stops_the_load_naming_file_row_and_setting(two_sites: Path) -> None:
    (two_sites.parent / "images/south/img_9.png").write_bytes(b"garbage")

    with pytest.raises(DataError, match=r"row 11.*img_9\.png.*on_unreadable = 'skip'"):
        load(two_sites, site_column="site")


def test_non_dicom_file_in_a_series_folder_counts_as_not_dicom(tmp_path: Path) -> None:
    stored = np.zeros((2, 4, 4), dtype=np.int16)
    write_series(tmp_path / "series", stored=stored)
    (tmp_path / "series" / "notes.txt").write_text("x")
    path = write_manifest(tmp_path / "m.csv", ["image", "label"], [["series", "0"]])

    loaded = load(path, on_unreadable="skip", transforms=TransformsConfig(intensity="none"))

    assert len(loaded) == 1  # type: ignore[arg-type]
    assert loaded.unreadable == {"site_1": {"not_dicom": 1}}  # type: ignore[attr-defined]


def test_every_file_unreadable_is_a_clear_error(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.csv", ["image", "label"], [["gone.png", "0"]])

    with pytest.raises(DataError, match="none of the 1 images could be read"):
        load(path, on_unreadable="skip")


def test_images_of_different_sizes_need_spatial_size(tmp_path: Path) -> None:
    rows = [
        [write_png(tmp_path / "a.png", grey(1, (8, 8))), "0"],
        [write_png(tmp_path / "b.png", grey(1, (9, 8))), "1"],
    ]
    path = write_manifest(tmp_path / "m.csv", ["image", "label"], rows)

    with pytest.raises(DataError, match=r"row 3.*spatial_size"):
        load(path)


def test_missing_column_names_the_key_and_the_columns(two_sites: Path) -> None:
    with pytest.raises(DataError, match=r"data.label_column = 'diagnosis'.*image, label, site"):
        load(two_sites, label_column="diagnosis")


def test_empty_cell_names_the_row_and_column(two_sites: Path) -> None:
    text = two_sites.read_text().replace("img_4.png,0,north", "img_4.png,,north")
    two_sites.write_text(text)

    with pytest.raises(DataError, match=r"row 6: column 'label' is empty"):
        load(two_sites)


def test_split_column_puts_each_row_where_it_says(two_sites: Path) -> None:
    lines = two_sites.read_text().splitlines()
    splits = ["train", "train", "train", "val", "test", "test"] * 2
    body = [f"{r},{s}" for r, s in zip(lines[1:], splits, strict=True)]
    text = "\n".join([lines[0] + ",split", *body])
    two_sites.write_text(text + "\n")
    loaded = load_manifest(
        path=two_sites,
        image_column="image",
        label_column="label",
        site_column="site",
        split_column="split",
        transforms=TransformsConfig(),
    )

    index = split_manifest(loaded=loaded, split_seed=0, test_fraction=0.2, val_fraction=0.0)

    assert index["north"]["train"].tolist() == [0, 1, 2]
    assert index["south"]["val"].tolist() == [9]
    assert index["south"]["test"].tolist() == [10, 11]


def test_bad_split_value_is_refused(two_sites: Path) -> None:
    lines = two_sites.read_text().splitlines()
    text = "\n".join([lines[0] + ",split"] + [f"{r},validation" for r in lines[1:]])
    two_sites.write_text(text + "\n")

    with pytest.raises(DataError, match="holds 'validation'; use train, val or test"):
        load(two_sites, split_column="split")


def test_natural_split_gives_one_site_per_value_and_a_central_test_of_their_tests(
    two_sites: Path,
) -> None:
    loaded = load_manifest(
        path=two_sites,
        image_column="image",
        label_column="label",
        site_column="site",
        transforms=TransformsConfig(),
    )

    data = manifest_federated_data(
        loaded=loaded,
        split_seed=0,
        test_fraction=0.34,
        val_fraction=0.0,
        method="natural",
        num_sites=2,
        seed=0,
        alpha=0.5,
    )

    assert sorted(data.sites) == ["north", "south"]
    for splits in data.sites.values():
        assert len(splits.train) + len(splits.test) == 6 and len(splits.test) >= 2
    assert len(data.central_test) == sum(len(s.test) for s in data.sites.values())
    assert data.unreadable == {"north": {}, "south": {}}


def tables_for(manifest: Path, **data: object) -> dict[str, object]:
    keys: dict[str, object] = {
        "source": "manifest",
        "path": str(manifest),
        "label_column": "label",
        "site_column": "site",
        "test_fraction": 0.34,
    }
    keys.update(data)
    return tiny_tables(
        data=keys,
        partition={"method": "natural", "num_sites": 2, "min_examples_per_site": 1},
    )


def test_load_data_reads_a_manifest_config(two_sites: Path) -> None:
    config = config_from_dict(tables_for(two_sites, transforms={"spatial_size": [16, 16]}))

    data = load_data(config)

    assert sorted(data.sites) == ["north", "south"]
    assert data.central_test.x.shape[1:] == (1, 16, 16)


def test_load_data_without_site_column_partitions_like_medmnist(two_sites: Path) -> None:
    tables = tables_for(two_sites, site_column="")
    tables["partition"] = {"method": "iid", "num_sites": 3, "min_examples_per_site": 1}
    config = config_from_dict(tables)

    data = load_data(config)

    assert sorted(data.sites) == ["site_1", "site_2", "site_3"]
    assert sum(len(s.train) + len(s.test) for s in data.sites.values()) == 12
    assert data.unreadable == {"all": {}}


def test_num_sites_must_match_the_site_column(two_sites: Path) -> None:
    tables = tables_for(two_sites)
    tables["partition"] = {"method": "natural", "num_sites": 3}

    with pytest.raises(ConfigError, match="set partition.num_sites = 2"):
        load_data(config_from_dict(tables))


def test_mask_column_with_classification_is_refused(two_sites: Path) -> None:
    config = config_from_dict(tables_for(two_sites, mask_column="image"))

    with pytest.raises(ConfigError, match="mask_column"):
        load_data(config)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"label_column": ""}, "needs data.label_column"),
        ({"path": ""}, "data.path is required"),
        ({"transforms": {"spatial_size": [8]}}, "spatial_size must hold 2"),
        ({"transforms": {"spacing": [1.0, -1.0]}}, "spacing must hold 2 or 3 positive"),
        ({"transforms": {"spacing": [1.0, 1.0], "spatial_size": [8, 8, 8]}}, "one value per"),
        ({"transforms": {"orientation": "XYZ"}}, "three axis codes"),
        ({"transforms": {"orientation": "RAS", "spatial_size": [8, 8]}}, "applies to volumes"),
        ({"transforms": {"channels": 2}}, "channels must be 0"),
        ({"transforms": {"window_width": 0}}, "window_width must be positive"),
        ({"transforms": {"intensity": "gamma"}}, "data.transforms.intensity"),
        ({"transforms": {"zoom": 2}}, "unknown key 'data.transforms.zoom'"),
        ({"on_unreadable": "ignore"}, "data.on_unreadable"),
    ],
)
def test_bad_manifest_settings_are_refused_naming_the_key(
    two_sites: Path, data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tables_for(two_sites, **data))


def test_manifest_with_a_site_column_needs_the_natural_partition(two_sites: Path) -> None:
    tables = tables_for(two_sites)
    tables["partition"] = {"method": "iid", "num_sites": 2}

    with pytest.raises(ConfigError, match="partition.method = 'natural'"):
        config_from_dict(tables)


def test_transforms_table_survives_the_run_snapshot_and_set_overrides(
    two_sites: Path, tmp_path: Path
) -> None:
    import tomli_w

    from flmi.config import load_config

    tables = tables_for(two_sites, transforms={"spatial_size": [16, 16], "intensity": "zscore"})
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(tables))

    config = load_config(path, overrides=["data.transforms.spatial_size=[12, 12]"])
    snapshot = tmp_path / "snapshot.toml"
    snapshot.write_text(tomli_w.dumps(config.to_dict()))

    assert config.data.transforms == TransformsConfig(spatial_size=[12, 12], intensity="zscore")
    assert load_config(snapshot) == config
