"""A natural split takes its site count from the data; a count set that disagrees is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from flmi.config import config_from_dict, load_config
from flmi.core.errors import ConfigError
from flmi.data.natural_sites import column_sites
from tests.conftest import write_config


def _heart(**partition: object) -> dict[str, object]:
    return {
        "data": {"source": "heart_disease", "path": "/nowhere"},
        "partition": {"method": "natural", **partition},
        "task": {"model": "logistic"},
    }


def _csv_tables(csv: Path, **partition: object) -> dict[str, object]:
    return {
        "data": {"source": "csv", "path": csv.name, "label_column": "y", "site_column": "site"},
        "partition": {"method": "natural", **partition},
        "task": {"model": "logistic"},
    }


@pytest.fixture
def three_site_csv(tmp_path: Path) -> Path:
    rows = ["x,y,site"] + [f"{i},{i % 2},{s}" for s in ("north", "south", "west") for i in range(6)]
    rows.append("9,1,")  # an empty site cell names no site
    path = tmp_path / "table.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fed_heart_disease_without_num_sites_has_its_four_hospitals() -> None:
    assert config_from_dict(_heart()).partition.num_sites == 4


def test_a_num_sites_that_disagrees_with_the_data_names_both_counts() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(_heart(num_sites=3))

    assert str(caught.value) == (
        "partition.num_sites = 3, but Fed-Heart-Disease has its own 4 hospitals: with "
        "partition.method = 'natural' the sites come from the data; remove "
        "partition.num_sites or set it to 4"
    )


def test_the_sites_of_a_csv_site_column_are_counted(tmp_path: Path, three_site_csv: Path) -> None:
    assert column_sites(three_site_csv, "site") == ["north", "south", "west"]
    config = load_config(write_config(tmp_path / "c.toml", _csv_tables(three_site_csv)))

    assert config.partition.num_sites == 3


def test_a_csv_whose_column_names_other_sites_than_num_sites_is_refused(
    tmp_path: Path, three_site_csv: Path
) -> None:
    path = write_config(tmp_path / "c.toml", _csv_tables(three_site_csv, num_sites=2))

    with pytest.raises(ConfigError, match=r"column 'site' of table.csv names 3 sites \(north, "):
        load_config(path)


def test_a_split_that_is_not_natural_keeps_its_num_sites(tmp_path: Path) -> None:
    tables = {
        "data": {"source": "synthetic", "n_patients": 240},
        "partition": {"method": "natural", "num_sites": 3},
    }
    assert config_from_dict(tables).partition.num_sites == 3  # generated: the count is a knob
    assert column_sites(tmp_path / "absent.csv", "site") is None
