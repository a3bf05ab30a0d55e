"""The record keeps every round; replay gives each round's model back bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from flmi.cli import main
from flmi.config import load_config
from flmi.core.errors import ConfigError, DataError
from flmi.forensics.reader import RecordReader
from flmi.forensics.replay import (
    bitwise_equal,
    counterfactual,
    reaggregate,
    recorded_strategy,
    replay_round,
)
from flmi.report.rundir import RunDir
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config

ROUNDS = 3


def _run(folder: Path, **sections: dict) -> Path:
    tables = tiny_tables(record={"updates": True}, **sections)
    tables["federation"]["rounds"] = ROUNDS
    config = load_config(write_config(folder / "c.toml", tables))
    run_experiment(config=config, out=folder / "run")
    return folder / "run"


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("fedavg"))


@pytest.fixture(scope="module")
def fedadam_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # FedAdam keeps server moments in its state: replay must restore them.
    return _run(tmp_path_factory.mktemp("fedadam"), strategy={"name": "fedadam"})


def test_the_record_holds_every_round_as_hashed_safetensors_with_a_manifest(
    fedavg_run: Path,
) -> None:
    record = fedavg_run / "record"
    blobs = sorted((record / "blobs").iterdir())
    assert blobs and all(b.suffix == ".safetensors" for b in blobs)
    for blob in blobs:  # content-addressed: each file is named by the SHA-256 of its bytes
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.stem
    reader = RecordReader(run_dir=fedavg_run)
    assert reader.rounds() == [1, 2, 3]
    manifest = json.loads((record / "rounds" / "round-00002.json").read_text())
    assert manifest["round"] == 2 and manifest["strategy"] == "fedavg"
    sites = [u["site"] for u in manifest["updates"]]
    assert sites == reader.sites == ["hospital_1", "hospital_2", "hospital_3", "hospital_4"]
    counts = [u["num_examples"] for u in manifest["updates"]]
    weights = [u["weight"] for u in manifest["updates"]]
    assert weights == pytest.approx([c / sum(counts) for c in counts])
    assert all(
        (record / "blobs" / f"{u['sha256']}.safetensors").is_file() for u in manifest["updates"]
    )


def test_fedavg_replay_of_every_round_equals_the_runs_model_bit_for_bit(fedavg_run: Path) -> None:
    reader = RecordReader(run_dir=fedavg_run)
    strategy = recorded_strategy(reader)
    run = RunDir(path=fedavg_run)
    for rnd in (2, 3):  # the checkpoints a run keeps
        checkpoint = run.checkpoint(arm="federated", rnd=rnd)
        assert checkpoint is not None
        assert bitwise_equal(replay_round(reader, strategy, rnd), checkpoint[1])
    final = load_file(str(fedavg_run / "model.safetensors"))
    assert bitwise_equal(replay_round(reader, strategy, ROUNDS), final)


def test_fedadam_replay_restores_the_server_moments_and_matches_bit_for_bit(
    fedadam_run: Path,
) -> None:
    reader = RecordReader(run_dir=fedadam_run)
    strategy = recorded_strategy(reader)
    final = load_file(str(fedadam_run / "model.safetensors"))
    assert bitwise_equal(replay_round(reader, strategy, ROUNDS), final)
    # Started from a fresh state instead, the same updates give another model: the state matters.
    assert not bitwise_equal(reaggregate(reader, strategy, ROUNDS), final)


def test_a_counterfactual_that_leaves_nobody_out_is_the_runs_model(fedavg_run: Path) -> None:
    reader = RecordReader(run_dir=fedavg_run)
    strategy = recorded_strategy(reader)
    final = load_file(str(fedavg_run / "model.safetensors"))
    assert bitwise_equal(counterfactual(reader, strategy, from_round=1, without=[]), final)
    left_out = counterfactual(reader, strategy, from_round=2, without=["hospital_1"])
    assert not bitwise_equal(left_out, final)


def test_a_counterfactual_of_the_last_round_is_the_mean_of_the_others(fedavg_run: Path) -> None:
    reader = RecordReader(run_dir=fedavg_run)
    recorded = reader.read(ROUNDS)
    kept = [u for u in recorded.updates if u.site != "hospital_2"]
    total = sum(u.num_examples for u in kept)
    got = counterfactual(
        reader, recorded_strategy(reader), from_round=ROUNDS, without=["hospital_2"]
    )
    for name, value in got.items():
        expected = sum(u.num_examples / total * u.params[name].astype(np.float64) for u in kept)
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def test_a_counterfactual_naming_an_unknown_site_is_refused(fedavg_run: Path) -> None:
    reader = RecordReader(run_dir=fedavg_run)
    with pytest.raises(ConfigError, match="no such site"):
        counterfactual(reader, recorded_strategy(reader), from_round=1, without=["nowhere"])


def test_another_rule_recombines_the_recorded_updates(fedavg_run: Path) -> None:
    reader = RecordReader(run_dir=fedavg_run)
    median = reaggregate(reader, recorded_strategy(reader, name="median"), 2)
    mean = reader.read(2).params
    stacked = {k: np.stack([u.params[k] for u in reader.read(2).updates]) for k in median}
    for name, value in median.items():  # a median lies within the sites' values, coordinate-wise
        assert (stacked[name].min(axis=0) <= value).all()
        assert (value <= stacked[name].max(axis=0)).all()
    assert not bitwise_equal(median, mean)


def test_a_tampered_blob_is_refused(tmp_path: Path, fedavg_run: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(fedavg_run, copy)
    entry = json.loads((copy / "record" / "rounds" / "round-00001.json").read_text())["updates"][0]
    blob = copy / "record" / "blobs" / f"{entry['sha256']}.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not hash to its name"):
        RecordReader(run_dir=copy).read(1)


def test_flmi_replay_writes_the_rounds_model(tmp_path: Path, fedavg_run: Path) -> None:
    out = tmp_path / "round3.safetensors"
    assert main(["replay", str(fedavg_run), "--round", "3", "--out", str(out)]) == 0
    assert bitwise_equal(load_file(str(out)), load_file(str(fedavg_run / "model.safetensors")))


def test_flmi_replay_of_a_run_without_a_record_names_the_setting(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", tiny_tables()))
    run_experiment(config=config, out=tmp_path / "plain")
    out = tmp_path / "x.safetensors"
    assert main(["replay", str(tmp_path / "plain"), "--round", "1", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
def test_recording_under_secure_aggregation_is_refused_as_hidden_by_design(
    tmp_path: Path, aggregation: str
) -> None:
    tables = tiny_tables(record={"updates": True}, privacy={"aggregation": aggregation})
    with pytest.raises(ConfigError, match="hidden by design"):
        load_config(write_config(tmp_path / "c.toml", tables))


def test_contributions_without_a_record_are_refused(tmp_path: Path) -> None:
    tables = tiny_tables(record={"contributions": True})
    with pytest.raises(ConfigError, match="record.updates = true"):
        load_config(write_config(tmp_path / "c.toml", tables))
