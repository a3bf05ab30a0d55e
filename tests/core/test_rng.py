from __future__ import annotations

import subprocess
import sys

from flmi.core.rng import derive_seed


def test_seed_differs_per_site_round_and_purpose() -> None:
    base = derive_seed(seed=0, party="a", rnd=1)
    assert base != derive_seed(seed=0, party="b", rnd=1)
    assert base != derive_seed(seed=0, party="a", rnd=2)
    assert base != derive_seed(seed=1, party="a", rnd=1)
    assert base != derive_seed(seed=0, party="a", rnd=1, purpose="x")


def test_seed_is_the_same_in_another_process() -> None:
    code = "from flmi.core.rng import derive_seed; print(derive_seed(seed=3, party='h', rnd=7))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive_seed(seed=3, party="h", rnd=7)
