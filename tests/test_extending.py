"""Parts registered by a script, and objects passed to run_experiment, are used as named."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from flmi.config import config_from_dict, training_hparams
from flmi.core.errors import ConfigError
from flmi.core.federation import Runtime
from flmi.core.messages import EvaluateInstruction, EvaluateReply, TrainInstruction, TrainReply
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits
from flmi.data.source_registry import SOURCES, DataSourceSpec
from flmi.data.sources import load_data
from flmi.registry import PluginError
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.runtime.registry import RUNTIMES, RuntimeSpec
from flmi.simulation import run_experiment
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.model_registry import MODELS, NetworkRequest, NetworkSpec
from tests.conftest import tiny_tables


def _one_round(**sections: dict[str, object]) -> dict[str, object]:
    tables = tiny_tables(**sections)
    tables["federation"]["rounds"] = 1
    return tables


class CountingRuntime:
    """In-process delivery that counts the training calls it carries."""

    calls = 0

    def __init__(self, *, sites: Sequence[SiteEndpoint]) -> None:
        self._inner = InProcessRuntime(sites=sites)

    def site_names(self) -> Sequence[str]:
        return self._inner.site_names()

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        CountingRuntime.calls += 1
        return self._inner.train(instructions)

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        return self._inner.evaluate(instructions)


def _counting(*, sites: Sequence[SiteEndpoint]) -> Runtime:
    return CountingRuntime(sites=sites)


@pytest.fixture
def counting_runtime() -> Iterator[None]:
    RUNTIMES.register("counting", RuntimeSpec(summary="counts", build=_counting))
    CountingRuntime.calls = 0
    yield
    RUNTIMES.unregister("counting")


def test_runtime_name_selects_a_registered_runtime_for_the_federated_arm(
    counting_runtime: None,
) -> None:
    config = config_from_dict(tiny_tables(runtime={"name": "counting", "device": "cpu"}))

    run_experiment(config=config, out=None)

    assert CountingRuntime.calls == 2  # one training call per round, rounds = 2


def test_an_unknown_runtime_name_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.name: unknown runtime 'dask'.*'inprocess'"):
        config_from_dict(tiny_tables(runtime={"name": "dask"}))


def _two_sites(config: object, seed: int) -> FederatedData:
    rng = np.random.default_rng(seed)

    def split(n: int) -> ArraySplit:
        return ArraySplit(
            x=rng.random((n, 1, 16, 16), dtype=np.float32), y=np.arange(n, dtype=np.int64) % 2
        )

    sites = {f"s{k}": SiteSplits(train=split(8), val=split(4), test=split(4)) for k in (1, 2)}
    return FederatedData(sites=sites, central_test=split(6))


def _needs_two_sites(config: object) -> None:
    if config.partition.num_sites != 2:  # type: ignore[attr-defined]
        raise ConfigError("partition.num_sites must be 2 for data.source = 'two'")


@pytest.fixture
def two_site_source() -> Iterator[None]:
    SOURCES.register(
        "two",
        DataSourceSpec(
            summary="two", load=_two_sites, check=_needs_two_sites, tasks=("classification",)
        ),
    )
    yield
    SOURCES.unregister("two")


def test_a_registered_data_source_checks_its_own_keys_and_loads(two_site_source: None) -> None:
    with pytest.raises(ConfigError, match="num_sites must be 2 for data.source = 'two'"):
        config_from_dict(tiny_tables(data={"source": "two"}))
    config = config_from_dict(
        tiny_tables(data={"source": "two"}, partition={"num_sites": 2, "method": "natural"})
    )

    data = load_data(config)

    assert sorted(data.sites) == ["s1", "s2"] and len(data.central_test) == 6


def test_an_unknown_data_source_lists_the_registered_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"data\.source: unknown data source 'dicomz'.*'medmnist'"
    ):
        config_from_dict(tiny_tables(data={"source": "dicomz"}))


def _flat(request: NetworkRequest) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(request.in_channels * 16 * 16, request.out_channels)
    )


def test_task_model_accepts_a_registered_network_factory() -> None:
    MODELS.register("flat", NetworkSpec(summary="flat", build=_flat, tasks=("classification",)))
    try:
        config_from_dict(tiny_tables(task={"model": "flat"}))  # the config accepts the name
        task = ClassificationTask(
            num_classes=3, in_channels=1, spatial_dims=2, positive_label=1, model="flat"
        )
        model = task.build_model(seed=0)
    finally:
        MODELS.unregister("flat")

    assert isinstance(model[1], torch.nn.Linear) and model[1].out_features == 3


def test_a_network_is_refused_for_a_task_it_does_not_serve() -> None:
    with pytest.raises(ConfigError, match=r"task\.model: 'unet' is not a classification model"):
        ClassificationTask(
            num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, model="unet"
        )


class NamedFedAvg(FedAvg):
    """FedAvg under another name, to tell it apart in the run directory."""

    @property
    def name(self) -> str:
        return "my_fedavg"


def test_run_experiment_takes_strategy_and_task_objects_and_records_them(tmp_path: Path) -> None:
    config = config_from_dict(_one_round())
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=4
    )

    result = run_experiment(
        config=config,
        out=tmp_path / "run",
        strategy=NamedFedAvg(hparams=training_hparams(config)),
        task=task,
    )

    assert result.summary["strategy"] == "my_fedavg"
    record = json.loads((tmp_path / "run" / "plugins.json").read_text())
    assert record["strategy"]["object"] == f"{__name__}.NamedFedAvg"
    assert record["task"]["object"] == "flmi.tasks.classification.ClassificationTask"
    assert record["data_source"]["distribution"] == "flmi"
    with pytest.raises(PluginError, match=r"strategy was the Python object .*NamedFedAvg"):
        run_experiment(config=config, out=tmp_path / "run", resume=True, task=task)
