"""``flmi predict``: score new images with a run's final model, without unpickling anything.

The model is rebuilt from the run's ``config.toml`` and ``model.json`` and its
weights read from ``model.safetensors``; images get the run's preprocessing
(:mod:`flmi.data.images`). Each image gets every class probability and the
label at the run's operating threshold (chosen on validation data).
"""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmi.config import config_from_dict
from flmi.core.errors import RunDirError
from flmi.data.images import ImageBatch, read_images
from flmi.report.curves import DEFAULT_THRESHOLD, bin_index
from flmi.report.plugins import check_plugins
from flmi.report.rundir import CONFIG, MODEL
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.device import resolve_device
from flmi.tasks.image_tasks import densenet_settings
from flmi.tasks.torch_params import load_params
from flmi.tensorio import atomic_write_bytes, load_tensors


@dataclass(frozen=True)
class TrainedModel:
    """A run's final model, ready to score images.

    Parameters
    ----------
    task
        The task the model was trained for.
    model
        The network, weights loaded, in evaluation mode.
    input_shape
        One image's shape, channels first.
    threshold
        The run's operating threshold (``value``, ``bin``, ``bins``, ``method``).
    device
        Where the model runs.
    """

    task: ClassificationTask
    model: torch.nn.Module
    input_shape: tuple[int, ...]
    threshold: Mapping[str, Any]
    device: torch.device


def load_trained_model(run_dir: Path, *, device: str | None = None) -> TrainedModel:
    """Rebuild the run's model from its config and ``model.safetensors`` (no pickle).

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None`` takes the run's
    ``[runtime] device``.

    Raises
    ------
    RunDirError
        The run directory lacks ``config.toml`` or the model, or the model's
        sidecar lacks what rebuilding needs.
    PluginError
        The run used a plug-in package that is not installed (named).
    """
    for name in (CONFIG, MODEL):
        if not (run_dir / name).is_file():
            raise RunDirError(
                f"{run_dir / name} is missing; point `flmi predict` at a finished run directory"
            )
    check_plugins(run_dir, command="flmi predict")
    config = config_from_dict(tomllib.loads((run_dir / CONFIG).read_text()))
    params, meta = load_tensors(path=run_dir / MODEL)
    missing = [k for k in ("in_channels", "spatial_dims", "input_shape") if k not in meta]
    if missing:
        raise RunDirError(
            f"{run_dir / 'model.json'} lacks {', '.join(missing)}; the run was made by an older "
            "flmi: rerun it to predict with it"
        )
    t = config.task
    task = ClassificationTask(
        num_classes=t.num_classes,
        in_channels=int(meta["in_channels"]),
        spatial_dims=int(meta["spatial_dims"]),
        positive_label=t.positive_label,
        model=t.model,
        width=t.width,
        augment=False,
        dtype=t.dtype,
        densenet=densenet_settings(config),
    )
    where = resolve_device(device if device is not None else config.runtime.device)
    model = task.build_model(seed=config.federation.seed).to(where)
    load_params(model, params, where=str(run_dir / MODEL))
    model.eval()
    threshold = meta.get("threshold") or {
        "value": DEFAULT_THRESHOLD,
        "bin": round(DEFAULT_THRESHOLD * config.report.histogram_bins),
        "bins": config.report.histogram_bins,
        "method": "default",
    }
    return TrainedModel(
        task=task,
        model=model,
        input_shape=tuple(int(d) for d in meta["input_shape"]),
        threshold=threshold,
        device=where,
    )


def thresholded_labels(
    probs: np.ndarray, *, positive_label: int, threshold: Mapping[str, Any]
) -> np.ndarray:
    """The positive label where its probability reaches the threshold, else the likeliest other.

    The comparison is made on bins exactly as the threshold was chosen
    (:func:`flmi.report.curves.bin_index`).
    """
    positive = bin_index(probs[:, positive_label], int(threshold["bins"])) >= int(threshold["bin"])
    others = probs.copy()
    others[:, positive_label] = -np.inf
    return np.where(positive, positive_label, others.argmax(axis=1)).astype(np.int64)


@dataclass(frozen=True)
class Predictions:
    """Per-image probabilities and labels, with where each image came from."""

    rows: list[dict[str, str]]
    columns: list[str]


def predict(trained: TrainedModel, batches: Sequence[ImageBatch]) -> Predictions:
    """Score every image of ``batches``."""
    task = trained.task
    columns = ["file", "split", "index", "label", *[f"p_{c}" for c in range(task.num_classes)]]
    columns += ["predicted", "threshold"]
    rows: list[dict[str, str]] = []
    for batch in batches:
        probs, _ = task.predict_proba(model=trained.model, x=batch.x, device=trained.device)
        predicted = thresholded_labels(
            probs, positive_label=task.positive_label, threshold=trained.threshold
        )
        for i in range(batch.x.shape[0]):
            row = {
                "file": str(batch.source),
                "split": batch.split,
                "index": str(i),
                "label": "" if batch.labels is None else str(int(batch.labels[i])),
                "predicted": str(int(predicted[i])),
                "threshold": repr(float(trained.threshold["value"])),
            }
            row.update({f"p_{c}": repr(float(probs[i, c])) for c in range(task.num_classes)})
            rows.append(row)
    return Predictions(rows=rows, columns=columns)


def write_csv(predictions: Predictions, path: Path) -> None:
    """Write the predictions as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=predictions.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(predictions.rows)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def predict_files(
    *, run_dir: Path, paths: Sequence[Path], out: Path, device: str | None, split: str | None
) -> int:
    """Read every file first (a bad one stops it, named, before anything is written), then score.

    Returns
    -------
    int
        The number of images scored.
    """
    trained = load_trained_model(run_dir, device=device)
    batches = read_images(paths, input_shape=trained.input_shape, split=split)
    predictions = predict(trained, batches)
    write_csv(predictions, out)
    return len(predictions.rows)
