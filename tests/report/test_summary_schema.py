"""summary.json's typed layout: a real run reads back to itself; bad files name file and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flmi.config import load_config
from flmi.core.errors import RunDirError
from flmi.report.summary_schema import (
    PRE_SCHEMA,
    SCHEMA_VERSION,
    ArmIntervals,
    ArmSummary,
    Summary,
    SummaryError,
    read_summary,
)
from flmi.simulation import run_experiment
from tests.conftest import tiny_tables, write_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("schema")
    tables = tiny_tables(federation={"rounds": 1}, baselines={"pooled": True, "local": True})
    run_experiment(config=load_config(write_config(tmp / "c.toml", tables)), out=tmp / "run")
    return tmp / "run"


def _raw(run_dir: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return raw


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_real_runs_summary_reads_back_to_the_same_document(run_dir: Path) -> None:
    raw = _raw(run_dir)

    summary = read_summary(run_dir / "summary.json")

    assert summary.to_json() == raw
    assert Summary.from_json(summary.to_json()) == summary
    assert raw["schema_version"] == SCHEMA_VERSION == 1
    assert set(summary.arms) == {"federated", "pooled", "local"}
    federated = summary.arms["federated"]
    assert federated.ci is not None and federated.ci.global_intervals is not None
    low, high = federated.ci.global_intervals["auc"]
    assert federated.global_metrics is not None and federated.threshold is not None
    auc = federated.global_metrics["auc"]
    assert low is not None and high is not None and auc is not None
    assert low <= auc <= high


def test_a_file_without_schema_version_is_read_as_the_pre_schema_layout(
    run_dir: Path, tmp_path: Path
) -> None:
    raw = _raw(run_dir)
    del raw["schema_version"]

    summary = read_summary(_write(tmp_path, raw))

    assert summary.schema_version == PRE_SCHEMA == 0
    assert summary.arms == read_summary(run_dir / "summary.json").arms


def test_a_newer_schema_version_is_refused_naming_the_file_and_version(
    run_dir: Path, tmp_path: Path
) -> None:
    path = _write(tmp_path, {**_raw(run_dir), "schema_version": 2})

    with pytest.raises(
        SummaryError, match=r"summary.json: schema_version 2 is newer .* \(up to 1\)"
    ):
        read_summary(path)


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (["rounds"], "two", "field 'rounds' must be an integer, got str 'two'"),
        (["seed"], True, "field 'seed' must be an integer, got bool"),
        (["versions", "torch"], 2, "field 'versions.torch' must be a string"),
        (["sites"], 4, "field 'sites' must be an object, got int"),
        (
            ["arms", "federated", "site_mean", "auc"],
            "high",
            "field 'arms.federated.site_mean.auc' must be a number or null",
        ),
        (
            ["arms", "pooled", "ci", "global", "auc"],
            [0.5],
            r"field 'arms.pooled.ci.global.auc' must be a \[low, high\] pair",
        ),
        (["wall_s"], "1s", "field 'wall_s' must be a number of seconds"),
    ],
)
def test_a_wrong_typed_field_is_refused_naming_the_field(
    run_dir: Path, tmp_path: Path, where: list[str], value: object, message: str
) -> None:
    raw = copy.deepcopy(_raw(run_dir))
    target = raw
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = _write(tmp_path, raw)

    with pytest.raises(SummaryError, match=message) as caught:
        read_summary(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_field_and_a_broken_file_are_refused_as_run_dir_errors(
    run_dir: Path, tmp_path: Path
) -> None:
    raw = _raw(run_dir)
    del raw["arms"]["federated"]["site_mean"]
    with pytest.raises(RunDirError, match="field 'arms.federated.site_mean' is missing"):
        read_summary(_write(tmp_path, raw))
    (tmp_path / "summary.json").write_text('{"arms": ')
    with pytest.raises(SummaryError, match="summary.json: not JSON"):
        read_summary(tmp_path / "summary.json")


def test_a_deployments_summary_lists_sites_and_has_no_intervals_or_global_key() -> None:
    summary = Summary(
        arms={"federated": ArmSummary(per_site={"a": {"auc": 0.75}}, site_mean={"auc": 0.75})},
        rounds=3,
        seed=7,
        torch_threads=1,
        strategy="fedavg",
        runtime="grpc",
        sites=("a", "b"),
        privacy={"dp": "none"},
        versions={"flmi": "0"},
    )

    assert summary.to_json() == {
        "schema_version": 1,
        "arms": {"federated": {"per_site": {"a": {"auc": 0.75}}, "site_mean": {"auc": 0.75}}},
        "rounds": 3,
        "seed": 7,
        "torch_threads": 1,
        "strategy": "fedavg",
        "runtime": "grpc",
        "sites": ["a", "b"],
        "privacy": {"dp": "none"},
        "versions": {"flmi": "0"},
    }


NAMES = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
NUMBER = st.none() | st.floats(allow_nan=False, allow_infinity=False)
METRICS = st.dictionaries(NAMES, NUMBER, max_size=3)
INTERVALS = st.dictionaries(NAMES, st.tuples(NUMBER, NUMBER), max_size=3)
JSON_OBJECT = st.dictionaries(
    NAMES, st.none() | st.integers() | NAMES | st.lists(st.integers(), max_size=2), max_size=3
)
ARMS = st.builds(
    ArmSummary,
    per_site=st.dictionaries(NAMES, METRICS, max_size=3),
    site_mean=METRICS,
    global_metrics=st.none() | METRICS,
    ci=st.none()
    | st.builds(
        ArmIntervals,
        global_intervals=st.none() | INTERVALS,
        per_site=st.dictionaries(NAMES, INTERVALS, max_size=2),
    ),
    threshold=st.none() | JSON_OBJECT,
    at_threshold=st.none() | JSON_OBJECT,
)
SUMMARIES = st.builds(
    Summary,
    arms=st.dictionaries(st.sampled_from(["federated", "pooled", "local"]), ARMS, max_size=3),
    rounds=st.integers(0, 1000),
    seed=st.integers(),
    torch_threads=st.integers(1, 64),
    strategy=NAMES,
    privacy=JSON_OBJECT,
    versions=st.dictionaries(NAMES, NAMES, max_size=3),
    sites=JSON_OBJECT | st.lists(NAMES, max_size=3).map(tuple),
    wall_s=st.none() | st.floats(0, 1e6),
    device=st.none() | NAMES,
    plugins=st.none() | JSON_OBJECT,
    data=st.none() | JSON_OBJECT,
    runtime=st.none() | st.just("grpc"),
    sites_left_out=st.none() | st.dictionaries(NAMES, NAMES, max_size=2),
    unreadable=st.none() | JSON_OBJECT,
    site_scanners=st.none() | JSON_OBJECT,
    schema_version=st.sampled_from([PRE_SCHEMA, SCHEMA_VERSION]),
)


@settings(max_examples=150, deadline=None)
@given(summary=SUMMARIES)
def test_to_json_then_from_json_through_json_text_is_the_identity(summary: Summary) -> None:
    text = json.dumps(summary.to_json(), allow_nan=False, sort_keys=True)

    assert Summary.from_json(json.loads(text)) == summary
