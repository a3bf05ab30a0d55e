"""Shared fixtures: paths to the real data and small configs that run in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import settings

# Property tests draw the same examples on every run and every machine, so CI
# cannot pass or fail by the luck of the draw. (Tests' own @settings still set
# max_examples and deadlines.)
settings.register_profile("flmi", derandomize=True, database=None)
settings.load_profile("flmi")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BREASTMNIST = SHARED_DATA / "medmnist" / "breastmnist.npz"

requires_breastmnist = pytest.mark.skipif(
    not BREASTMNIST.is_file(),
    reason=f"real BreastMNIST not found at {BREASTMNIST} (the shared data folder is absent)",
)


def tiny_tables(**sections: dict[str, Any]) -> dict[str, Any]:
    """A config that trains 4 generated hospitals for 2 short rounds; sections override keys."""
    tables: dict[str, dict[str, Any]] = {
        "data": {"source": "synthetic", "image_size": 16, "n_patients": 240},
        "partition": {"method": "natural", "num_sites": 4, "min_examples_per_site": 5},
        "task": {"name": "classification", "num_classes": 2, "positive_label": 1, "width": 4},
        "strategy": {"name": "fedavg"},
        "federation": {
            "rounds": 2,
            "local_epochs": 1,
            "lr": 0.05,
            "batch_size": 16,
            "seed": 0,
            "min_sites": 1,
        },
        "baselines": {"pooled": False, "local": False},
        "runtime": {"device": "cpu", "torch_threads": 1},
        "report": {"bootstrap_resamples": 20},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    return tables


def write_config(path: Path, tables: dict[str, Any]) -> Path:
    """Write ``tables`` as TOML to ``path`` and return it."""
    path.write_text(tomli_w.dumps(tables))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A small valid config file in a temporary folder."""
    return write_config(tmp_path / "tiny.toml", tiny_tables())
