"""Simulation overhead: flmi's in-process federation against a plain PyTorch loop.

Both arms do identical work: the same small CNN, the same 12,000 28x28
images split over the same sites, the same seeded batch order, SGD with
momentum, one local epoch per round, and example-weighted averaging summed in
sorted site order in float64. The script checks that both arms end with
bit-identical weights, so the comparison is of overhead alone.

Each run is a fresh subprocess (arms interleaved), so imports, allocator state
and caches do not leak between runs. Memory is the peak RSS minus the RSS
measured right after imports (data generation and training count).

Usage::

    .venv/bin/python benchmarks/simulation_overhead.py [--runs 5] [--quick]

Prints one table per workload with median wall time, median extra memory and
the ratios flmi / plain (goal: wall <= 1.10x, memory <= 1.2x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

N_IMAGES = 12_000
BATCH = 32
LR = 0.05
MOMENTUM = 0.9
SEED = 0
WIDTH = 16
WORKLOADS = {"10 sites x 5 rounds": (10, 5), "50 sites x 3 rounds": (50, 3)}


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(sites: int):  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.random((N_IMAGES, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 2, N_IMAGES).astype(np.int64)
    bounds = np.linspace(0, N_IMAGES, sites + 1).astype(int)
    names = [f"site_{i:03d}" for i in range(sites)]
    return {n: (x[a:b], y[a:b]) for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)}


def _digest(arrays) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(arrays[name].tobytes())
    return h.hexdigest()


def arm_flmi(sites: int, rounds: int) -> dict[str, object]:
    """The in-process federation: Site objects, InProcessRuntime, FedAvg, run_federation."""
    import numpy as np
    import torch

    from flmi.core.federation import FederationPlan, run_federation
    from flmi.data.arrays import ArraySplit, SiteSplits
    from flmi.runtime.inprocess import InProcessRuntime
    from flmi.site.site import Site
    from flmi.strategies.fedavg import FedAvg
    from flmi.tasks.classification import ClassificationTask
    from flmi.tasks.torch_params import params_copy

    torch.set_num_threads(1)
    base = _rss_mb()
    start = time.perf_counter()
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=WIDTH
    )
    empty = ArraySplit(x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros(0, np.int64))
    cpu = torch.device("cpu")
    shared = task.build_model(seed=SEED)
    site_objs = [
        Site(
            name=n,
            data=SiteSplits(train=ArraySplit(x=x, y=y), val=empty, test=empty),
            task=task,
            seed=SEED,
            device=cpu,
            model=shared,
        )
        for n, (x, y) in _data(sites).items()
    ]
    hparams = {
        "lr": LR,
        "batch_size": BATCH,
        "local_epochs": 1,
        "optimizer": "sgd",
        "momentum": MOMENTUM,
    }

    class Quiet:
        def on_round(self, record, params, state) -> None:  # type: ignore[no-untyped-def]
            pass

    result = run_federation(
        strategy=FedAvg(hparams=hparams),
        runtime=InProcessRuntime(sites=site_objs),
        initial_params=params_copy(task.build_model(seed=SEED)),
        plan=FederationPlan(
            rounds=rounds, fraction=1.0, min_sites=sites, seed=SEED, eval_every=rounds
        ),
        observer=Quiet(),
    )
    wall = time.perf_counter() - start
    return {"wall_s": wall, "mem_mb": _peak_rss_mb() - base, "digest": _digest(result.params)}


def arm_plain(sites: int, rounds: int) -> dict[str, object]:
    """A plain PyTorch loop written the way a researcher would, doing the same arithmetic."""
    import torch
    import torch.nn.functional as F

    from flmi.core.rng import derive_seed
    from flmi.tasks.models import SmallCNN

    torch.set_num_threads(1)
    base = _rss_mb()
    start = time.perf_counter()
    data = {n: (torch.from_numpy(x), torch.from_numpy(y)) for n, (x, y) in _data(sites).items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = SmallCNN(in_channels=1, num_classes=2, spatial_dims=2, width=WIDTH)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    total = float(sum(len(y) for _, y in data.values()))
    for rnd in range(1, rounds + 1):
        acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        for name in sorted(data):
            x, y = data[name]
            model.load_state_dict(global_state)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            gen = torch.Generator().manual_seed(
                derive_seed(seed=SEED, party=name, rnd=rnd, purpose="train")
            )
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), BATCH):
                idx = order[i : i + BATCH]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            weight = len(y) / total
            for k, v in model.state_dict().items():
                acc[k] += weight * v.double()
        global_state = {k: v.to(global_state[k].dtype) for k, v in acc.items()}
    wall = time.perf_counter() - start
    params = {k: v.numpy() for k, v in global_state.items()}
    return {"wall_s": wall, "mem_mb": _peak_rss_mb() - base, "digest": _digest(params)}


def _child(arm: str, sites: int, rounds: int) -> None:
    fn = arm_flmi if arm == "flmi" else arm_plain
    print(json.dumps(fn(sites, rounds)))


@dataclass(frozen=True)
class Measurement:
    """One run of one arm."""

    wall_s: float
    mem_mb: float
    digest: str


def _spawn(arm: str, sites: int, rounds: int) -> Measurement:
    out = subprocess.run(
        [sys.executable, __file__, "--child", arm, str(sites), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement(
        wall_s=float(raw["wall_s"]), mem_mb=float(raw["mem_mb"]), digest=raw["digest"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 run, 2 rounds each (smoke test)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    runs = 1 if args.quick else args.runs
    print(
        f"simulation overhead: {N_IMAGES} images 28x28, SmallCNN width {WIDTH}, batch {BATCH}, "
        f"SGD momentum {MOMENTUM}, 1 local epoch, torch threads 1, "
        f"{runs} runs per arm (interleaved)"
    )
    for label, (sites, rounds) in WORKLOADS.items():
        rounds = 2 if args.quick else rounds
        results: dict[str, list[Measurement]] = {"plain": [], "flmi": []}
        for _ in range(runs):
            for arm, measured in results.items():
                measured.append(_spawn(arm, sites, rounds))
        wall = {a: statistics.median(m.wall_s for m in ms) for a, ms in results.items()}
        mem = {a: statistics.median(m.mem_mb for m in ms) for a, ms in results.items()}
        digests = {m.digest for ms in results.values() for m in ms}
        print(f"\n{label} ({rounds} rounds)")
        print(f"  {'arm':<6} {'median wall s':>14} {'median extra MB':>16}")
        for arm in results:
            print(f"  {arm:<6} {wall[arm]:>14.2f} {mem[arm]:>16.1f}")
        print(
            f"  ratio flmi/plain: wall {wall['flmi'] / wall['plain']:.3f}x  "
            f"memory {mem['flmi'] / mem['plain']:.3f}x  (goal: <= 1.10x, <= 1.2x)"
        )
        print(f"  final weights identical in both arms: {'yes' if len(digests) == 1 else 'NO'}")
        if len(digests) != 1:
            raise SystemExit("the arms ended with different weights: the comparison is void")


if __name__ == "__main__":
    main()
