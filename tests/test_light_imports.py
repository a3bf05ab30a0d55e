"""A classification run loads no heavy library it does not use before training."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("monai", "matplotlib", "scipy", "sklearn", "pandas")

_PROGRAM = """
import json, sys
from flmi.config import config_from_dict
from flmi.simulation import run_experiment

tables = {
    "data": {"source": "synthetic", "image_size": 16, "n_patients": 120},
    "partition": {"method": "natural", "num_sites": 2, "min_examples_per_site": 5},
    "task": {"name": "classification", "num_classes": 2, "positive_label": 1, "width": 4},
    "federation": {"rounds": 1, "batch_size": 16, "min_sites": 1},
    "baselines": {"pooled": False, "local": False},
    "runtime": {"device": "cpu", "torch_threads": 1},
    "report": {"bootstrap_resamples": 20},
}
loaded = {}

def progress(record, rounds):
    loaded["round"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)

run_experiment(config=config_from_dict(tables), out=None, progress=progress)
loaded["end"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps(loaded))
"""


def test_a_classification_run_imports_no_monai_matplotlib_scipy_or_sklearn() -> None:
    program = f"HEAVY = {HEAVY!r}\n{_PROGRAM}"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=300
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"round": [], "end": []}
