"""The Ray runtime's ``[runtime]`` keys: checked at the edge, naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import flmi.runtime.ray as ray_runtime
from flmi.config import RuntimeConfig, config_from_dict
from flmi.core.errors import ConfigError
from flmi.runtime.ray import site_groups, worker_count
from flmi.simulation import run_experiment
from tests.runtime.ray_support import ray_tables


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"address": "localhost"}, "runtime.address"),
        ({"address": "host:0"}, "runtime.address"),
        ({"address": ":6379"}, "runtime.address"),
        ({"num_cpus_per_site": 0.0}, "runtime.num_cpus_per_site"),
        ({"num_gpus_per_site": -0.5}, "runtime.num_gpus_per_site"),
        ({"max_workers": 0}, "runtime.max_workers"),
    ],
)
def test_a_bad_ray_setting_is_refused_naming_its_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(ray_tables(runtime={"name": "ray", **settings}))


def test_auto_and_host_port_addresses_are_accepted() -> None:
    assert RuntimeConfig(address="auto").address == "auto"
    assert RuntimeConfig(address="10.0.0.2:6379").address == "10.0.0.2:6379"


def test_workers_default_to_what_the_cpus_allow_but_never_more_than_the_sites() -> None:
    # 8 CPUs at 2 per site hold 4 workers; 3 sites need only 3.
    assert worker_count(RuntimeConfig(num_cpus_per_site=2), num_sites=10, resources={"CPU": 8}) == 4
    assert worker_count(RuntimeConfig(num_cpus_per_site=2), num_sites=3, resources={"CPU": 8}) == 3


def test_a_quarter_gpu_per_site_lets_four_workers_share_one_gpu() -> None:
    runtime = RuntimeConfig(num_cpus_per_site=1, num_gpus_per_site=0.25)
    assert worker_count(runtime, num_sites=10, resources={"CPU": 16, "GPU": 1}) == 4


def test_max_workers_is_used_when_it_fits_and_refused_when_it_does_not() -> None:
    assert worker_count(RuntimeConfig(max_workers=2), num_sites=5, resources={"CPU": 4}) == 2
    with pytest.raises(ConfigError, match=r"runtime\.max_workers = 5 .*room for 4"):
        worker_count(RuntimeConfig(max_workers=5), num_sites=5, resources={"CPU": 4})


def test_a_cluster_without_room_for_one_worker_is_refused_naming_the_per_site_keys() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.num_gpus_per_site = 1"):
        worker_count(RuntimeConfig(num_gpus_per_site=1), num_sites=3, resources={"CPU": 4})


def test_sites_are_dealt_to_workers_in_turn_over_their_sorted_names() -> None:
    assert site_groups(["c", "a", "d", "b", "e"], workers=2) == [["a", "c", "e"], ["b", "d"]]
    assert site_groups(["a"], workers=1) == [["a"]]


def test_without_ray_installed_a_ray_run_names_the_extra_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_runtime, "ray_installed", lambda: False)
    config = config_from_dict(ray_tables(runtime={"name": "ray"}))
    with pytest.raises(ConfigError, match=r"pip install 'flmi\[ray\]'"):
        run_experiment(config=config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
