"""`flmi predict`: the run's model, rebuilt without pickle, scores images as the run scored them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flmi.cli import main
from flmi.config import load_config
from flmi.core.errors import DataError
from flmi.data.images import read_images, to_model_input
from flmi.predict import load_trained_model, predict_files, thresholded_labels
from flmi.report.curves import bin_index
from flmi.simulation import run_experiment
from flmi.tasks.metrics import binary_auc
from tests.conftest import BREASTMNIST, REPO, requires_breastmnist, tiny_tables, write_config


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("predict")
    tables = tiny_tables(federation={"rounds": 1}, report={"bootstrap_resamples": 0})
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


@requires_breastmnist
def test_predicting_the_breastmnist_test_images_gives_the_runs_auc(tmp_path: Path) -> None:
    overrides = [
        "federation.rounds=2",
        "task.width=8",
        "baselines.pooled=false",
        "baselines.local=false",
        "report.bootstrap_resamples=0",
        "runtime.device=cpu",
    ]
    config = load_config(REPO / "examples" / "breastmnist.toml", overrides=overrides)
    run_experiment(config=config, out=tmp_path / "run")
    out = tmp_path / "preds.csv"

    code = main(
        [
            *("predict", str(tmp_path / "run"), str(BREASTMNIST)),
            *("--split", "test", "--out", str(out), "--device", "cpu"),
        ]
    )

    assert code == 0
    rows = _rows(out)
    assert len(rows) == 156  # BreastMNIST's official test split
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    malignant = np.array([float(r["p_0"]) for r in rows])  # positive_label = 0
    labels = np.array([int(r["label"]) for r in rows])
    auc = binary_auc(scores=malignant, positive=labels == 0)
    assert auc == summary["arms"]["federated"]["global"]["auc"]
    threshold = summary["arms"]["federated"]["threshold"]
    called = np.array([int(r["predicted"]) for r in rows]) == 0
    assert np.array_equal(called, bin_index(malignant, threshold["bins"]) >= threshold["bin"])


def test_png_jpeg_and_npz_of_one_image_give_the_same_probabilities(
    tiny_run: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.savez(tmp_path / "a.npz", image=image)
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=95)
    out = tmp_path / "p.csv"

    n = predict_files(
        run_dir=tiny_run,
        paths=[tmp_path / "a.png", tmp_path / "a.npz", tmp_path / "a.jpg"],
        out=out,
        device="cpu",
        split=None,
    )

    rows = _rows(out)
    assert n == 3 and [Path(r["file"]).name for r in rows] == ["a.png", "a.npz", "a.jpg"]
    assert rows[0]["p_1"] == rows[1]["p_1"]  # lossless: identical input, identical output
    assert abs(float(rows[2]["p_1"]) - float(rows[0]["p_1"])) < 0.1  # JPEG is lossy
    for r in rows:
        assert float(r["p_0"]) + float(r["p_1"]) == pytest.approx(1.0, abs=1e-6)
        assert r["predicted"] in ("0", "1") and r["label"] == ""


def test_an_unreadable_file_is_named_and_nothing_is_written(tiny_run: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(good)
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "p.csv"

    with pytest.raises(DataError, match=r"scan\.png: cannot read this image"):
        predict_files(run_dir=tiny_run, paths=[good, bad], out=out, device="cpu", split=None)
    assert not out.exists()


def test_the_command_line_reports_an_unreadable_file_by_name(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")

    code = main(["predict", str(tiny_run), str(bad)])

    said = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert "broken.npz: cannot read this .npz file" in said
    assert not (tiny_run / "predictions.csv").exists()


def test_an_image_of_the_wrong_size_is_refused_with_the_size_the_model_needs(
    tiny_run: Path, tmp_path: Path
) -> None:
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "big.png")

    with pytest.raises(DataError, match=r"big\.png: image shape \(28, 28\).*\(1, 16, 16\)"):
        predict_files(
            run_dir=tiny_run,
            paths=[tmp_path / "big.png"],
            out=tmp_path / "p.csv",
            device="cpu",
            split=None,
        )


def test_an_unsupported_file_type_names_the_accepted_ones(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match=r"x\.bmp: unsupported file type.*\.npz, \.png"):
        read_images([tmp_path / "x.bmp"], input_shape=(1, 16, 16))


def test_model_is_rebuilt_from_safetensors_and_config_alone(tiny_run: Path) -> None:
    trained = load_trained_model(tiny_run, device="cpu")
    assert trained.input_shape == (1, 16, 16)
    assert trained.threshold["method"] in ("youden", "default")
    assert not trained.model.training


def test_layouts_grey_channels_last_and_batched_all_become_channels_first() -> None:
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    expected = (grey / np.float32(255)).astype(np.float32)[None, None]
    for array in (grey, grey[None], grey[None, None], grey[None, :, :, None]):
        assert np.array_equal(to_model_input(array, input_shape=(1, 4, 4), where="x"), expected)
    rgb = np.stack([grey, grey + 1, grey + 2], axis=-1)
    x = to_model_input(rgb, input_shape=(3, 4, 4), where="x")
    assert x.shape == (1, 3, 4, 4) and np.array_equal(x[0, 1], (grey + 1) / np.float32(255))


def test_thresholded_label_calls_the_positive_class_at_the_threshold_bin() -> None:
    probs = np.array([[0.69, 0.31], [0.70, 0.30], [0.2, 0.8]])
    threshold = {"value": 0.3, "bin": 30, "bins": 100}
    labels = thresholded_labels(probs, positive_label=1, threshold=threshold)
    assert labels.tolist() == [1, 1, 1]
    threshold = {"value": 0.31, "bin": 31, "bins": 100}
    assert thresholded_labels(probs, positive_label=1, threshold=threshold).tolist() == [1, 0, 1]
