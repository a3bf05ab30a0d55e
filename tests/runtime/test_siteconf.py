"""SITE.toml: the bounds a hospital sets, and the codes it refuses a plan with."""

from __future__ import annotations

from pathlib import Path

import pytest

from flmi.core.errors import ConfigError
from flmi.runtime.grpc.codes import WireError
from flmi.runtime.grpc.siteconf import SiteSettings, load_site_settings

SITE = """
[data]
federation_config = "fed.toml"

[site]
state_dir = "state"

[bounds]
strategies = ["fedavg", "fedprox"]
max_rounds = 50
max_local_epochs = 3

[bounds.hparams]
optimizer = ["sgd"]
lr = { min = 0.0001, max = 0.1 }
"""
PLAN = {"lr": 0.01, "local_epochs": 1, "optimizer": "sgd", "batch_size": 32}


def _settings(tmp_path: Path, text: str = SITE) -> SiteSettings:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return load_site_settings(path, site="hospital_1")


def test_paths_are_taken_from_the_site_files_folder(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.federation_config == tmp_path / "fed.toml"
    assert settings.audit_log == tmp_path / "state" / "audit.jsonl"


def test_a_plan_within_bounds_is_accepted(tmp_path: Path) -> None:
    bounds = _settings(tmp_path).bounds
    assert bounds.check_plan(strategy="fedavg", rounds=10, hparams=PLAN) is None


@pytest.mark.parametrize(
    ("strategy", "rounds", "change", "code", "words"),
    [
        ("scaffold", 10, {}, WireError.STRATEGY_REFUSED, "strategy 'scaffold'"),
        ("fedavg", 51, {}, WireError.ROUNDS_REFUSED, "51 rounds"),
        ("fedavg", 10, {"local_epochs": 4}, WireError.HPARAM_REFUSED, "local_epochs = 4"),
        ("fedavg", 10, {"lr": 0.5}, WireError.HPARAM_REFUSED, "lr = 0.5 exceeds"),
        ("fedavg", 10, {"lr": 0.00001}, WireError.HPARAM_REFUSED, "below"),
        ("fedavg", 10, {"optimizer": "adam"}, WireError.HPARAM_REFUSED, "optimizer = 'adam'"),
    ],
)
def test_a_plan_out_of_bounds_is_refused_with_a_code_that_says_which(
    tmp_path: Path,
    strategy: str,
    rounds: int,
    change: dict[str, object],
    code: WireError,
    words: str,
) -> None:
    bounds = _settings(tmp_path).bounds
    refusal = bounds.check_plan(strategy=strategy, rounds=rounds, hparams={**PLAN, **change})
    assert refusal is not None
    assert refusal[0] == code and words in refusal[1]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[data]\n", "data.federation_config is required"),
        ('[data]\nfederation_config = "f.toml"\n[nope]\n', "unknown table [nope]"),
        ('[data]\nfederation_config = "f.toml"\n[site]\ncolour = 1\n', "unknown key 'site.colour'"),
        (
            '[data]\nfederation_config = "f.toml"\n[bounds.hparams]\nlr = "small"\n',
            "bounds.hparams.lr must be",
        ),
        ('[data]\nfederation_config = "f.toml"\n[bounds]\nmax_rounds = -1\n', "bounds.max_rounds"),
    ],
)
def test_a_bad_site_file_names_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(".", r"\.")):
        _settings(tmp_path, text)


@pytest.mark.parametrize("name", ["hospital_1", "hospital_2"])
def test_the_shipped_site_files_are_valid_and_accept_the_shipped_plan(name: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "deploy"
    settings = load_site_settings(examples / f"{name}.toml", site=name)
    assert settings.federation_config == examples / "fed.toml"
    assert (
        settings.bounds.check_plan(
            strategy="fedavg",
            rounds=5,
            hparams={"lr": 0.002, "optimizer": "adam", "local_epochs": 1},
        )
        is None
    )


def test_the_server_refuses_a_he_key_holder_outside_deploy_sites_before_writing_anything(
    tmp_path: Path,
) -> None:
    from flmi.config import config_from_dict
    from flmi.core.errors import ConfigError
    from flmi.runtime.grpc.server import serve
    from tests.runtime.deploy_support import fed_tables

    tables = fed_tables(
        site_names=["a", "b"], privacy={"aggregation": "he", "he_key_holder": "hospital_9"}
    )
    with pytest.raises(ConfigError, match="privacy.he_key_holder = 'hospital_9' is not a site"):
        serve(
            config=config_from_dict(tables),
            certs=tmp_path,
            address="127.0.0.1:0",
            out=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()
