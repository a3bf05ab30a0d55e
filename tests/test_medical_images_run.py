"""Manifests of medical images through a whole federation.

Two things are shown here:

- header and path leaks: identifying values planted in DICOM headers and in
  folder and file names appear in no message that left a site, in no log but
  the site's own, and in no file of the run directory;
- the real sample DICOM and NIfTI files, listed in a manifest, load, go
  through the pipeline and train one round.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from flmi.cli import main
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
)
from flmi.runtime.inprocess import InProcessRuntime
from flmi.runtime.registry import RUNTIMES, RuntimeSpec
from tests.conftest import REPO, SHARED_DATA, tiny_tables, write_config
from tests.data.dicom_factory import Patient, write_series, write_slice

DICOM_DIR = SHARED_DATA / "dicom"
NIFTI_DIR = SHARED_DATA / "nifti"
REAL_DICOM = ("CT_small.dcm", "MR_small.dcm", "MR2_UNCR.dcm")
REAL_NIFTI = ("anatomical.nii", "functional.nii", "example4d.nii.gz", "example_nifti2.nii.gz")

# Values that identify patients: they must never leave the site or reach a log or the run.
HEADER_MARKERS = ("ZQXNAME", "ZQXPID77", "19010203", "19020304")
PATH_MARKERS = ("ZQXWARD", "ZQXSCAN", "ZQXSLICE", "ZQXPNG")
# The name of a file that cannot be read: it belongs in the site's own log, and only there.
UNREADABLE_MARKER = "ZQXBROKEN"


def _params_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    return b"".join(name.encode() + np.ascontiguousarray(a).tobytes() for name, a in params.items())


def reply_bytes(reply: TrainReply | EvaluateReply) -> bytes:
    """Every field of a reply, as the bytes a runtime would send."""
    if isinstance(reply, ClientError):
        fields: dict[str, object] = {"site": reply.site, "code": reply.code, "msg": reply.message}
        return json.dumps(fields).encode()
    if isinstance(reply, ClientUpdate):
        head = {
            "site": reply.site,
            "kind": reply.kind,
            "n": reply.num_examples,
            "steps": reply.num_steps,
            "metrics": dict(reply.metrics),
        }
        return json.dumps(head).encode() + _params_bytes(reply.params) + _params_bytes(reply.extras)
    assert isinstance(reply, EvaluateResult)
    head = {
        "site": reply.site,
        "split": reply.split,
        "n": reply.num_examples,
        "metrics": dict(reply.metrics),
        "ci": {k: list(v) for k, v in reply.ci.items()},
    }
    return json.dumps(head).encode()


class RecordingRuntime(InProcessRuntime):
    """The in-process runtime, keeping the bytes of every reply that leaves a site."""

    sent: ClassVar[list[bytes]] = []

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        replies = super().train(instructions)
        RecordingRuntime.sent.extend(reply_bytes(r) for r in replies.values())
        return replies

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        replies = super().evaluate(instructions)
        RecordingRuntime.sent.extend(reply_bytes(r) for r in replies.values())
        return replies


def _found(marker: str, data: bytes) -> bool:
    return marker.encode() in data or marker.lower().encode() in data


def _write_manifest(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "site"])
        writer.writerows(rows)
    return path


def _marked_study(root: Path) -> Path:
    """Two sites of DICOM series, single slices and PNGs, every one of them marked.

    Patient name, ID, birth and study dates carry markers; so do folder and file
    names. One file at site north is not an image; its name carries the
    unreadable marker.
    """
    from PIL import Image

    patient = Patient(
        name=f"{HEADER_MARKERS[0]}^Anna",
        patient_id=HEADER_MARKERS[1],
        birth_date=HEADER_MARKERS[2],
        study_date=HEADER_MARKERS[3],
    )
    rng = np.random.default_rng(0)
    rows: list[list[str]] = []
    for site in ("north", "south"):
        for k in range(6):
            label = k % 2
            stored = (rng.normal(0, 50, size=(3, 8, 8)) + 300 * label).astype(np.int16)
            folder = f"{PATH_MARKERS[0]}_{site}/{PATH_MARKERS[1]}_{k}"
            if k < 3:
                write_series(
                    root / folder,
                    stored=stored,
                    intercept=-1024.0,
                    patient=patient,
                    file_stem=f"{PATH_MARKERS[2]}_{k}",
                )
                rows.append([folder, str(label), site])
            elif k < 5:
                name = f"{folder}/{PATH_MARKERS[2]}_{k}.dcm"
                write_slice(root / name, stored=stored[1], intercept=-1024.0, patient=patient)
                rows.append([name, str(label), site])
            else:
                name = f"{folder}/{PATH_MARKERS[3]}_{k}.png"
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray((stored[0] % 256).astype(np.uint8)).save(root / name)
                rows.append([name, str(label), site])
    broken = f"{PATH_MARKERS[0]}_north/{UNREADABLE_MARKER}.dcm"
    (root / broken).write_bytes(b"not DICOM")
    rows.append([broken, "0", "north"])
    manifest_dir = root / "manifests"
    manifest_dir.mkdir()
    return _write_manifest(manifest_dir / "study.csv", [[f"../{r[0]}", *r[1:]] for r in rows])


def test_header_and_path_markers_leave_no_site_and_reach_no_log_and_no_run_file(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = _marked_study(tmp_path / "hospital")
    tables = tiny_tables(
        data={
            "source": "manifest",
            "path": str(manifest),
            "label_column": "label",
            "site_column": "site",
            "test_fraction": 0.34,
            "on_unreadable": "skip",
            "transforms": {"spatial_size": [8, 8, 4], "intensity": "window", "channels": 1},
        },
        partition={"method": "natural", "num_sites": 2, "min_examples_per_site": 1},
        federation={"rounds": 3, "batch_size": 4},
        report={"bootstrap_resamples": 5},
        runtime={"name": "recording", "device": "cpu"},
    )
    config = write_config(tmp_path / "run.toml", tables)
    out = tmp_path / "run"
    RecordingRuntime.sent = []
    RUNTIMES.register("recording", RuntimeSpec(summary="records", build=RecordingRuntime))
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
            warnings.simplefilter("always")
            assert main(["run", str(config), "--out", str(out)]) == 0
    finally:
        RUNTIMES.unregister("recording")

    # The federation ran and its messages were captured.
    sent = RecordingRuntime.sent
    assert len(sent) >= 3 * 2 * 2  # 3 rounds x 2 sites x (train + evaluate) at the least
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["sites"]) == ["north", "south"]
    # What left the site about the unreadable file: a code and a count.
    assert summary["unreadable"] == {"north": {"not_dicom": 1}, "south": {}}

    site_log = "\n".join(r.getMessage() for r in caplog.records if r.name == "flmi.site.data")
    other_logs = "\n".join(
        f"{r.name} {r.getMessage()}" for r in caplog.records if r.name != "flmi.site.data"
    )
    console = capsys.readouterr()
    run_files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert run_files, "the run directory is empty"
    places: dict[str, bytes] = {
        "messages sent by sites": b"".join(sent),
        "logs other than the site's own": other_logs.encode(),
        "warnings": "\n".join(str(w.message) for w in caught).encode(),
        "console": (console.out + console.err).encode(),
        **{f"run file {p.relative_to(out)}": data for p, data in run_files.items()},
    }
    for marker in (*HEADER_MARKERS, *PATH_MARKERS, UNREADABLE_MARKER):
        leaks = [place for place, data in places.items() if _found(marker, data)]
        assert leaks == [], f"marker {marker} found in {leaks}"
    for marker in HEADER_MARKERS:
        assert marker not in site_log  # the header is never logged, not even locally
    # The unreadable file is named where the site's staff can find it, and only there.
    assert UNREADABLE_MARKER in site_log


def test_marked_study_really_carries_its_markers(tmp_path: Path) -> None:
    """The leak test's inputs hold the markers, so that test can fail."""
    import pydicom

    manifest = _marked_study(tmp_path / "hospital")
    dicom = next(
        p for p in (tmp_path / "hospital").rglob("*.dcm") if UNREADABLE_MARKER not in p.name
    )
    header = pydicom.dcmread(dicom)

    assert str(header.PatientName).startswith(HEADER_MARKERS[0])
    assert header.PatientID == HEADER_MARKERS[1]
    assert header.PatientBirthDate == HEADER_MARKERS[2] and header.StudyDate == HEADER_MARKERS[3]
    text = manifest.read_text()
    assert all(m in text for m in (PATH_MARKERS[0], PATH_MARKERS[1], PATH_MARKERS[3]))
    assert any(PATH_MARKERS[2] in p.name for p in (tmp_path / "hospital").rglob("*.dcm"))
    assert all(_found(m, dicom.read_bytes()) for m in HEADER_MARKERS)


def test_recording_runtime_sees_a_marker_that_a_site_does_send(tmp_path: Path) -> None:
    """The byte scan finds a marker when a reply does carry one (metrics keys are sent)."""
    reply = ClientUpdate(
        site="north",
        params={"w": np.zeros(2, np.float32)},
        kind="full",  # type: ignore[arg-type]
        num_examples=1,
        num_steps=1,
        metrics={HEADER_MARKERS[1]: 1.0},
    )

    assert _found(HEADER_MARKERS[1], reply_bytes(reply))


requires_real_samples = pytest.mark.skipif(
    not all((DICOM_DIR / n).is_file() for n in REAL_DICOM)
    or not all((NIFTI_DIR / n).is_file() for n in REAL_NIFTI),
    reason=f"real sample files not found in {DICOM_DIR} and {NIFTI_DIR} (no shared data folder)",
)


@requires_real_samples
def test_manifest_of_the_real_dicom_and_nifti_samples_trains_one_round(tmp_path: Path) -> None:
    # Labels are invented for the test; the sites group the files by scanner family.
    rows = [[str(DICOM_DIR / n), str(k % 2), "dicom_site"] for k, n in enumerate(REAL_DICOM)]
    rows.append([str(NIFTI_DIR / "anatomical.nii"), "1", "dicom_site"])
    rows += [[str(NIFTI_DIR / n), str(k % 2), "nifti_site"] for k, n in enumerate(REAL_NIFTI[1:])]
    manifest = _write_manifest(tmp_path / "real.csv", rows)
    tables = tiny_tables(
        data={
            "source": "manifest",
            "path": str(manifest),
            "label_column": "label",
            "site_column": "site",
            "test_fraction": 0.34,
            "transforms": {
                "spatial_size": [16, 16, 8],
                "orientation": "RAS",
                "channels": 1,
                "intensity": "zscore",
            },
        },
        partition={"method": "natural", "num_sites": 2, "min_examples_per_site": 1},
        federation={"rounds": 1, "batch_size": 2},
        report={"bootstrap_resamples": 0},
    )
    config = write_config(tmp_path / "real.toml", tables)
    out = tmp_path / "run"

    assert main(["run", str(config), "--out", str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    sites = summary["sites"]
    assert sorted(sites) == ["dicom_site", "nifti_site"]
    assert sum(s["n_train"] + s["n_test"] for s in sites.values()) == 7  # every file was read
    assert summary["unreadable"] == {"dicom_site": {}, "nifti_site": {}}
    federated = summary["arms"]["federated"]
    assert np.isfinite(federated["global"]["loss"])
    assert sorted(federated["per_site"]) == ["dicom_site", "nifti_site"]
    meta = json.loads((out / "model.json").read_text())["meta"]
    assert meta["spatial_dims"] == 3 and meta["in_channels"] == 1
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1]


def test_unreadable_file_stops_the_run_before_the_run_directory_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    rows = []
    for k in range(6):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(tmp_path / f"img_{k}.png")
        rows.append([f"img_{k}.png", str(k % 2), "north" if k < 3 else "south"])
    (tmp_path / "img_4.png").write_bytes(b"damaged")
    manifest = _write_manifest(tmp_path / "m.csv", rows)
    tables = tiny_tables(
        data={
            "source": "manifest",
            "path": str(manifest),
            "label_column": "label",
            "site_column": "site",
            "test_fraction": 0.34,
        },
        partition={"method": "natural", "num_sites": 2},
    )
    out = tmp_path / "run"

    code = main(["run", str(write_config(tmp_path / "c.toml", tables)), "--out", str(out)])

    assert code == 2
    assert not out.exists()
    message = " ".join(capsys.readouterr().out.split())
    assert "img_4.png" in message and "on_unreadable = 'skip'" in message


@requires_real_samples
def test_the_medical_samples_example_loads_every_file_over_two_sites() -> None:
    from flmi.config import load_config
    from flmi.data.sources import load_data

    config = load_config(REPO / "examples" / "medical_samples.toml")

    data = load_data(config)

    assert sorted(data.sites) == ["scanner_a", "scanner_b"]
    assert sum(len(s.train) + len(s.test) for s in data.sites.values()) == 7
    assert data.central_test.x.shape[1:] == (1, 16, 16, 8)
