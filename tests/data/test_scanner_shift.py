"""Per-site scanners for real image collections (``partition.scanner_shift``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flmi.config import load_config
from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.data.scanner_shift import apply_scanner_shift, scanner_json, site_scanners
from flmi.data.sources import load_data
from flmi.simulation import run_experiment

SITES = ["site_1", "site_2", "site_3", "site_4"]


def _same_images_everywhere(*, n: int = 12, size: int = 16, channels: int = 1) -> FederatedData:
    """Four sites holding the very same images, so only their scanners can tell them apart."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, (n, channels, size, size)).astype(np.float32)
    y = np.arange(n, dtype=np.int64) % 2
    split = ArraySplit(x=x, y=y)
    sites = {name: SiteSplits(train=split, val=split, test=split) for name in SITES}
    return FederatedData(sites=sites, central_test=split)


def test_the_same_seed_draws_the_same_scanners_and_another_seed_others() -> None:
    # Act
    a = site_scanners(site_names=SITES, seed=3)
    b = site_scanners(site_names=list(reversed(SITES)), seed=3)
    c = site_scanners(site_names=SITES, seed=4)

    # Assert
    assert a == b
    assert a != c
    gammas = [s.gamma for s in a.values()]
    assert len(set(gammas)) == 4  # Latin-hypercube draw: no two sites share a setting


def test_scanning_keeps_labels_and_sizes_and_makes_each_site_look_different() -> None:
    # Arrange
    data = _same_images_everywhere()

    # Act
    shifted = apply_scanner_shift(data, seed=0)

    # Assert
    original = data.sites["site_1"].train.x
    for name in SITES:
        splits = shifted.sites[name]
        assert splits.train.x.shape == original.shape
        assert splits.train.x.dtype == np.float32
        np.testing.assert_array_equal(splits.train.y, data.sites[name].train.y)
        assert float(splits.train.x.min()) >= 0.0 and float(splits.train.x.max()) <= 1.0
        assert not np.allclose(splits.train.x, original, atol=1e-2)
    mean_intensity = {round(float(shifted.sites[s].train.x.mean()), 3) for s in SITES}
    assert len(mean_intensity) == 4
    # The scanner keeps the image: each scanned image still correlates with its source.
    for name in SITES:
        scanned = shifted.sites[name].train.x.reshape(12, -1)
        source = original.reshape(12, -1)
        r = [np.corrcoef(scanned[i], source[i])[0, 1] for i in range(12)]
        assert min(r) > 0.5


def test_scanning_is_deterministic_by_seed() -> None:
    # Arrange
    data = _same_images_everywhere()

    # Act
    a, b = apply_scanner_shift(data, seed=5), apply_scanner_shift(data, seed=5)
    c = apply_scanner_shift(data, seed=6)

    # Assert
    np.testing.assert_array_equal(a.sites["site_2"].val.x, b.sites["site_2"].val.x)
    assert not np.array_equal(a.sites["site_2"].val.x, c.sites["site_2"].val.x)


def test_the_central_test_set_is_every_sites_scanned_test_split_in_site_order() -> None:
    # Arrange
    data = _same_images_everywhere()

    # Act
    shifted = apply_scanner_shift(data, seed=1)

    # Assert
    expected = np.concatenate([shifted.sites[s].test.x for s in sorted(SITES)])
    np.testing.assert_array_equal(shifted.central_test.x, expected)
    assert len(shifted.central_test) == 4 * 12


def test_colour_images_are_scanned_channel_by_channel() -> None:
    # Arrange
    data = _same_images_everywhere(channels=3)

    # Act
    shifted = apply_scanner_shift(data, seed=0)

    # Assert
    assert shifted.sites["site_3"].test.x.shape == (12, 3, 16, 16)


def test_volumes_are_refused_with_the_key_to_change() -> None:
    # Arrange
    x = np.zeros((4, 1, 6, 6, 6), dtype=np.float32)
    split = ArraySplit(x=x, y=np.zeros(4, dtype=np.int64))
    data = FederatedData(
        sites={s: SiteSplits(train=split, val=split, test=split) for s in SITES[:2]},
        central_test=split,
    )

    # Act / Assert
    with pytest.raises(ConfigError, match=r"partition\.scanner_shift.*square 2D"):
        apply_scanner_shift(data, seed=0)


def test_images_normalised_outside_0_1_are_refused_not_clipped() -> None:
    # Arrange
    x = np.random.default_rng(0).normal(0.0, 1.0, (4, 1, 8, 8)).astype(np.float32)
    split = ArraySplit(x=x, y=np.zeros(4, dtype=np.int64))
    data = FederatedData(
        sites={s: SiteSplits(train=split, val=split, test=split) for s in SITES[:2]},
        central_test=split,
    )

    # Act / Assert
    with pytest.raises(ConfigError, match=r"intensities in \[0, 1\].*minmax"):
        apply_scanner_shift(data, seed=0)


def test_generated_hospitals_refuse_scanner_shift_because_they_have_scanners(
    tmp_path: Path,
) -> None:
    # Arrange
    path = tmp_path / "c.toml"
    path.write_text(
        '[data]\nsource = "synthetic"\nn_patients = 200\n'
        "[partition]\nnum_sites = 2\nscanner_shift = true\n"
    )
    config = load_config(path)

    # Act / Assert
    with pytest.raises(ConfigError, match=r"partition\.scanner_shift.*synthetic"):
        load_data(config)


def _tiny_medmnist(tmp_path: Path) -> str:
    """Write a small MedMNIST-shaped file; return the TOML that reads it over 2 iid sites."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 8), ("test", 12)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "tiny.npz", **arrays)
    return (
        '[data]\nsource = "medmnist"\npath = "tiny.npz"\n'
        '[partition]\nmethod = "iid"\nnum_sites = 2\nseed = 7\n'
    )


def test_a_medmnist_file_split_into_sites_gets_one_scanner_per_site(tmp_path: Path) -> None:
    # Arrange
    text = _tiny_medmnist(tmp_path)
    (tmp_path / "plain.toml").write_text(text)
    (tmp_path / "shift.toml").write_text(text + "scanner_shift = true\n")

    # Act
    plain = load_data(load_config(tmp_path / "plain.toml"))
    shifted = load_data(load_config(tmp_path / "shift.toml"))

    # Assert
    for name in ("site_1", "site_2"):
        np.testing.assert_array_equal(shifted.sites[name].train.y, plain.sites[name].train.y)
        assert not np.allclose(shifted.sites[name].train.x, plain.sites[name].train.x, atol=1e-2)
    assert len(shifted.central_test) == len(plain.central_test)


def test_a_run_records_each_sites_scanner_in_its_summary(tmp_path: Path) -> None:
    # Arrange
    text = _tiny_medmnist(tmp_path) + "scanner_shift = true\n"
    text += (
        '[task]\nname = "classification"\nnum_classes = 2\nwidth = 4\n'
        "[federation]\nrounds = 1\nlocal_steps = 1\nbatch_size = 8\nseed = 0\n"
        "[baselines]\npooled = false\nlocal = false\n"
        '[runtime]\ndevice = "cpu"\ntorch_threads = 1\n[report]\nbootstrap_resamples = 0\n'
    )
    (tmp_path / "run.toml").write_text(text)
    config = load_config(tmp_path / "run.toml")

    # Act
    result = run_experiment(config=config, out=tmp_path / "run")

    # Assert
    recorded = json.loads((tmp_path / "run" / "summary.json").read_text())["site_scanners"]
    drawn = site_scanners(site_names=["site_1", "site_2"], seed=7)
    assert recorded == {name: scanner_json(profile) for name, profile in drawn.items()}
    assert result.summary["site_scanners"] == recorded
