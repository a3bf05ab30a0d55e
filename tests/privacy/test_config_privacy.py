"""The [privacy] table: allowed combinations, thresholds, ranges; errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flmi.config import config_from_dict, load_config
from flmi.core.errors import ConfigError
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


def _config(privacy: dict[str, object], **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    return config_from_dict(tiny_tables(privacy=privacy, **sections))


def test_plain_aggregation_is_the_default() -> None:
    assert config_from_dict(tiny_tables()).privacy.aggregation == "plain"


@pytest.mark.parametrize("aggregation", ["secagg", "he"])
@pytest.mark.parametrize(
    "strategy", ["fedavg", "fedprox", "fedadam", "scaffold", "fednova", "fedbn"]
)
def test_linear_strategies_run_under_secure_aggregation(aggregation: str, strategy: str) -> None:
    federation = {"optimizer": "sgd", "momentum": 0.0}
    config = _config(
        {"aggregation": aggregation}, strategy={"name": strategy}, federation=federation
    )

    assert config.privacy.aggregation == aggregation


@pytest.mark.parametrize(
    ("strategy", "why"),
    [
        ("median", "coordinate-wise median"),
        ("krum", "Krum scores each update"),
        ("trimmed_mean", "trimmed mean"),
        ("geometric_median", "geometric median"),
        ("ifca", "which site chose which cluster"),
    ],
)
def test_non_linear_strategies_are_a_config_error_that_says_why(strategy: str, why: str) -> None:
    options = {"num_byzantine": 0} if strategy == "krum" else {}
    with pytest.raises(ConfigError, match=why) as caught:
        _config(
            {"aggregation": "secagg"},
            strategy={"name": strategy, **options},
            federation={"min_sites": 4},
        )

    assert "privacy.aggregation = 'secagg'" in str(caught.value)


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_threshold_must_exceed_half_the_sampled_sites(threshold: int) -> None:
    with pytest.raises(ConfigError, match=r"privacy.secagg_threshold = \d+ must exceed half"):
        _config({"aggregation": "secagg", "secagg_threshold": threshold})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("secagg_bits", 60),
        ("secagg_clip", 0.0),
        ("he_poly_modulus_degree", 4096),
        ("he_scale_bits", 10),
    ],
)
def test_out_of_range_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"privacy.{key}"):
        _config({"aggregation": "secagg", key: value})


def test_unknown_privacy_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'privacy.secagg_treshold'"):
        _config({"aggregation": "secagg", "secagg_treshold": 3})


def test_unknown_key_holder_stops_the_run_before_anything_is_written(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        tiny_tables(privacy={"aggregation": "he", "he_key_holder": "hospital_9"}),
    )
    out = tmp_path / "run"

    with pytest.raises(ConfigError, match="privacy.he_key_holder = 'hospital_9' is not a site"):
        run_experiment(config=load_config(path), out=out)

    assert not out.exists()


def test_a_plain_run_imports_neither_cryptography_nor_tenseal() -> None:
    import subprocess
    import sys

    code = (
        "import sys, flmi.privacy.setup, flmi.config; "
        "print('tenseal' in sys.modules, 'cryptography' in sys.modules)"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.split() == ["False", "False"]


def test_dp_noise_is_secure_unless_the_insecure_key_is_set() -> None:
    assert config_from_dict(tiny_tables()).privacy.insecure_reproducible_noise is False
    insecure = _config({"dp": "sample", "insecure_reproducible_noise": True})
    assert insecure.privacy.insecure_reproducible_noise is True


def test_insecure_reproducible_noise_without_dp_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.insecure_reproducible_noise = true applies"):
        _config({"insecure_reproducible_noise": True})


@pytest.mark.parametrize("t", [1, 9])
def test_he_min_contributions_must_be_2_up_to_the_sampled_sites(t: int) -> None:
    with pytest.raises(ConfigError, match=rf"privacy.he_min_contributions = {t} must be 2\.\."):
        _config({"aggregation": "he", "he_min_contributions": t})


def test_the_default_he_threshold_is_a_strict_majority_of_the_sampled_sites_at_least_2() -> None:
    from flmi.privacy.setup import he_min_contributions

    config = _config({"aggregation": "he"})
    f = config.federation

    # ceil(fraction * n) sites are sampled (at least min_sites); t = floor(sampled / 2) + 1.
    assert he_min_contributions(config.privacy, f, num_sites=2) == 2
    assert he_min_contributions(config.privacy, f, num_sites=3) == 2
    assert he_min_contributions(config.privacy, f, num_sites=4) == 3
    assert he_min_contributions(config.privacy, f, num_sites=7) == 4
    half = dataclasses.replace(f, fraction=0.5, min_sites=1)
    assert he_min_contributions(config.privacy, half, num_sites=10) == 3
    explicit = dataclasses.replace(config.privacy, he_min_contributions=5)
    assert he_min_contributions(explicit, f, num_sites=10) == 5
