"""FedDebug localisation: random inputs, neuron activations, the odd site out first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flmi.cli import main
from flmi.config import load_config
from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.forensics.feddebug import DebugSettings, localise, site_model, suspects
from flmi.simulation import run_experiment
from flmi.tasks.torch_params import params_copy
from tests.conftest import tiny_tables, write_config


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 2),
    )


def test_the_site_left_out_of_the_agreeing_majority_gets_each_inputs_vote() -> None:
    same = np.array([[True, False, True, True]])
    odd = np.array([[False, True, False, False]])
    active = np.stack([same, same, odd, same])  # (sites, inputs, neurons)
    assert suspects([active]).tolist() == [[0.0, 0.0, 1.0, 0.0]]
    # Four identical sites: every removal leaves full agreement, so the vote is split.
    assert suspects([np.stack([same] * 4)]).tolist() == [[0.25, 0.25, 0.25, 0.25]]


def test_a_site_whose_weights_were_noised_is_ranked_first() -> None:
    network = _network()
    base = params_copy(network)
    rng = np.random.default_rng(0)
    models = [
        {
            k: (v + rng.normal(0, 0.01 if i != 3 else 1.0, v.shape)).astype(v.dtype)
            for k, v in base.items()
        }
        for i in range(6)
    ]
    sites = [f"s{i}" for i in range(6)]
    ranking = localise(
        sites=sites,
        models=models,
        network=network,
        input_shape=(1, 8, 8),
        settings=DebugSettings(inputs=30),
    )
    assert ranking[0][0] == "s3" and ranking[0][1] > 0.9
    assert sum(score for _, score in ranking) == pytest.approx(1.0)


def test_a_delta_update_stands_for_the_model_before_plus_it() -> None:
    before = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    delta = ClientUpdate(
        site="a",
        params={"w": np.array([0.5, -1.0], dtype=np.float32)},
        kind=UpdateKind.DELTA,
        num_examples=1,
        num_steps=1,
        metrics={},
    )
    assert site_model(delta, before)["w"].tolist() == [1.5, 1.0]


def test_localisation_needs_three_sites() -> None:
    network = _network()
    with pytest.raises(ValueError, match="at least 3 sites"):
        localise(
            sites=["a", "b"],
            models=[params_copy(network)] * 2,
            network=network,
            input_shape=(1, 8, 8),
            settings=DebugSettings(),
        )


def test_flmi_debug_names_the_site_that_sent_noise_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = tiny_tables(record={"updates": True}, sites={"hospital_3": {"fault": "noise"}})
    out = tmp_path / "run"
    run_experiment(config=load_config(write_config(tmp_path / "c.toml", tables)), out=out)
    assert main(["debug", str(out), "--round", "2"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines[0] == "hospital_3" and len(lines) == 8  # SITE SCORE, four sites
    assert main(["debug", str(out), "--json", "--inputs", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["round"] == 2 and report["ranking"][0]["site"] == "hospital_3"
