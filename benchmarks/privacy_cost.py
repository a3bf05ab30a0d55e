"""What secure and homomorphic aggregation cost: round time and bytes against a plain round.

Every arm runs the same federation: ``--sites`` sites (10), each training the
same ~1 M-parameter CNN (:class:`flmi.tasks.models.SmallCNN`, width 88: about 1.05 M
float32 parameters) for one local epoch on its own generated images, FedAvg,
the in-process runtime. Only ``privacy.aggregation`` differs:

* ``plain``: each site sends its float32 weights;
* ``secagg``: each site masks its count-weighted 64-bit fixed-point change (four
  protocol stages, pairwise X25519 masks with every other site, Shamir-shared
  seeds; :mod:`flmi.privacy.secagg`);
* ``he``: each site CKKS-encrypts its count-weighted change and commits to it;
  every site downloads the listed ciphertexts, recomputes the sum and signs
  it; the server adds the ciphertexts; the key holder decrypts the signed sum
  (:mod:`flmi.privacy.he`).

With ``--runtime grpc`` each arm is a real deployment instead: one ``flmi
server`` process and one ``flmi client`` process per site on 127.0.0.1, over
mutual TLS, on generated hospital images (``privacy_cost_grpc.py``); the round
time then includes the protocol's network stages (defaults: 4 sites, width 16).

Round 1 of ``he`` also makes and distributes the keys, so it is reported apart;
the steady-state numbers are medians over rounds 2..R. The arms run one after
another in this process, so the baseline is measured in the same run. The
script also checks that the secure arms end within 1e-4 of the plain weights.

Usage::

    .venv/bin/python benchmarks/privacy_cost.py [--sites 10] [--rounds 3] [--arms plain,secagg,he]
    .venv/bin/python benchmarks/privacy_cost.py --runtime grpc [--sites 4] [--rounds 4]

Prints one row per arm (median round time, bytes up and down per round) and
the ratios to ``plain``; the goal for ``secagg`` is a round time <= 1.5x plain.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping

import numpy as np
import torch

from flmi.core.federation import FederationPlan, RoundRecord, run_federation
from flmi.core.params import Params
from flmi.core.strategy import StateRecord
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.privacy.he import CkksSettings, HEServer
from flmi.privacy.linear import LinearRule
from flmi.privacy.secagg import FixedPoint, SecAggServer
from flmi.privacy.setup import he_sites
from flmi.privacy.site import SecureSite
from flmi.runtime.inprocess import InProcessRuntime, SiteEndpoint
from flmi.site.site import Site
from flmi.strategies.fedavg import FedAvg
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import params_copy

try:
    from privacy_cost_grpc import run_grpc_arm  # run as a script: benchmarks/ is on the path
except ImportError:  # imported as benchmarks.privacy_cost
    from benchmarks.privacy_cost_grpc import run_grpc_arm

SEED = 0
HPARAMS: Mapping[str, float | int | str] = {
    "lr": 0.01,
    "batch_size": 32,
    "local_epochs": 1,
    "local_steps": 0,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
}


class _Keep:
    """Keeps every round record."""

    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        self.records.append(record)


def _sites(
    *, count: int, images: int, task: ClassificationTask, model: torch.nn.Module
) -> list[Site]:
    rng = np.random.default_rng(SEED)
    empty = ArraySplit(x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros(0, np.int64))
    sites = []
    for i in range(count):
        x = rng.random((images, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 2, images).astype(np.int64)
        sites.append(
            Site(
                name=f"site_{i:02d}",
                data=SiteSplits(train=ArraySplit(x=x, y=y), val=empty, test=empty),
                task=task,
                seed=SEED,
                device=torch.device("cpu"),
                model=model,
            )
        )
    return sites


def run_arm(
    arm: str, *, sites: int, images: int, rounds: int, width: int
) -> tuple[list[RoundRecord], Params]:
    """One federation under ``arm``; its round records and final weights."""
    task = ClassificationTask(
        num_classes=2, in_channels=1, spatial_dims=2, positive_label=1, width=width
    )
    model = task.build_model(seed=SEED)
    plain_sites = _sites(count=sites, images=images, task=task, model=model)
    endpoints: list[SiteEndpoint] = list(plain_sites)
    secure: SecAggServer | HEServer | None = None
    if arm == "secagg":
        endpoints = [SecureSite(site=s) for s in plain_sites]
        secure = SecAggServer(
            threshold=0,
            fixed=FixedPoint(clip=1.0, bits=32),
            rule=LinearRule.WEIGHTED_MEAN,
        )
    elif arm == "he":
        endpoints = he_sites(
            plain_sites,
            key_holder=plain_sites[0].name,
            min_contributions=max(2, sites // 2 + 1),
        )
        secure = HEServer(
            key_holder=plain_sites[0].name, rule=LinearRule.WEIGHTED_MEAN, settings=CkksSettings()
        )
    keep = _Keep()
    result = run_federation(
        strategy=FedAvg(hparams=HPARAMS),
        runtime=InProcessRuntime(sites=endpoints),
        initial_params=params_copy(task.build_model(seed=SEED)),
        plan=FederationPlan(
            rounds=rounds, fraction=1.0, min_sites=sites, seed=SEED, eval_every=rounds
        ),
        observer=keep,
        secure=secure,
    )
    return keep.records, result.params


def main() -> None:
    """Run every arm and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=None, help="10 (in process), 4 (grpc)")
    parser.add_argument("--rounds", type=int, default=None, help="3 (in process), 4 (grpc)")
    parser.add_argument("--images", type=int, default=64, help="training images per site")
    parser.add_argument(
        "--width", type=int, default=None, help="SmallCNN width: 88 (~1.05 M params), 16 (grpc)"
    )
    parser.add_argument("--arms", default="plain,secagg,he")
    parser.add_argument(
        "--runtime",
        choices=("inprocess", "grpc"),
        default="inprocess",
        help="grpc: a server and one client process per site on 127.0.0.1",
    )
    args = parser.parse_args()
    grpc = args.runtime == "grpc"
    args.sites = args.sites or (4 if grpc else 10)
    args.rounds = args.rounds or (4 if grpc else 3)
    args.width = args.width or (16 if grpc else 88)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 of he includes key set-up)")
    torch.set_num_threads(1)
    arms = [a.strip() for a in args.arms.split(",")]
    if arms[0] != "plain":
        parser.error("--arms must start with plain: it is the baseline")
    rows: dict[str, dict[str, float]] = {}
    finals: dict[str, Params] = {}
    if not grpc:
        run_arm("plain", sites=2, images=8, rounds=1, width=8)  # warm-up: first torch calls
    for arm in arms:
        started = time.perf_counter()
        records, params = (run_grpc_arm if grpc else run_arm)(
            arm, sites=args.sites, images=args.images, rounds=args.rounds, width=args.width
        )
        steady = records[1:]
        rows[arm] = {
            "round1_s": records[0].wall_s,
            "round_s": statistics.median(r.wall_s for r in steady),
            "up_mb": statistics.median(r.bytes_up for r in steady) / 1e6,
            "down_mb": statistics.median(r.bytes_down for r in steady) / 1e6,
            "round1_mb": (records[0].bytes_up + records[0].bytes_down) / 1e6,
            "total_s": time.perf_counter() - started,
        }
        finals[arm] = params
        print(f"{arm}: done in {rows[arm]['total_s']:.1f} s", flush=True)
    size = sum(v.size for v in finals["plain"].values())
    print(
        f"\n{args.runtime}: {args.sites} sites x {size:,} parameters, {args.images} images per "
        f"site, {args.rounds} rounds; steady state = median of rounds 2..{args.rounds}\n"
    )
    head = (
        f"{'arm':8} {'round s':>9} {'x plain':>8} {'up MB':>9} {'x plain':>8} "
        f"{'down MB':>9} {'x plain':>8} {'round 1 s':>10} {'round 1 MB':>11}"
    )
    print(head)
    base = rows["plain"]
    for arm, row in rows.items():
        print(
            f"{arm:8} {row['round_s']:9.2f} {row['round_s'] / base['round_s']:8.2f} "
            f"{row['up_mb']:9.1f} {row['up_mb'] / base['up_mb']:8.2f} "
            f"{row['down_mb']:9.1f} {row['down_mb'] / base['down_mb']:8.2f} "
            f"{row['round1_s']:10.2f} {row['round1_mb']:11.1f}"
        )
    for arm, params in finals.items():
        gap = max(float(np.max(np.abs(params[k] - finals["plain"][k]))) for k in params)
        print(f"max |{arm} - plain| over the final weights: {gap:.2e}")
        if gap > 1e-4:
            raise SystemExit(f"{arm} drifted from the plain run by {gap:.2e}")
    if "secagg" in rows:
        ratio = rows["secagg"]["round_s"] / base["round_s"]
        verdict = "meets" if ratio <= 1.5 else "misses"
        print(f"secagg round time / plain = {ratio:.2f} ({verdict} the goal of <= 1.5)")


if __name__ == "__main__":
    main()
