"""`flmi run` end to end against a plain PyTorch script doing the same training.

Both arms get the same MedMNIST-format ``.npz`` (``--images`` 28x28 grey
images, 70 % train, 10 % validation, 20 % test, two classes, generated
here), the demo's settings (SmallCNN width 16, Adam lr 0.002, batch 32, one
local epoch, FedAvg over every site, seed 0, torch threads 1), IID sites,
``--rounds`` rounds, baselines off. Each round both score every site's test and
validation split and the central test set, as ``flmi run`` does.

- ``flmi``: ``python -m flmi.cli run CONFIG --out DIR`` in a fresh process, with
  the default report settings (1,000 bootstrap resamples, histograms, the
  HTML report, the model card). Its loop time is the sum of the federated
  rounds' ``wall_s`` in ``metrics.jsonl``.
- ``plain``: this file with ``--plain``, in a fresh process: load the file,
  split it, train and average, score, print. Its loop time is the time of
  its round loop.

Wall times are of the whole process (interpreter start, imports, data,
training, outputs), measured in this one run, the arms interleaved per size.
The two arms split the data with different generators, so their weights are
not compared; the work per round (examples, batches, forward passes) is the same.

Usage::

    .venv/bin/python benchmarks/end_to_end.py [--sizes 10,50,200] [--images 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0
BATCH = 32
LR = 0.002
WIDTH = 16
SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}


def write_npz(path: Path, images: int) -> None:
    """A MedMNIST-format file: uint8 ``(N, 28, 28)`` images, ``(N, 1)`` labels, three splits."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, 2, size=images)
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 30.0)
    pixels = rng.normal(90, 30, size=(images, 28, 28)) + 60 * labels[:, None, None] * blob
    x = np.clip(pixels, 0, 255).astype(np.uint8)
    y = labels.astype(np.uint8)[:, None]
    cuts = np.cumsum([int(images * SHARES["train"]), int(images * SHARES["val"])])
    arrays = {}
    for name, part in zip(SHARES, np.split(np.arange(images), cuts), strict=True):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = x[part], y[part]
    np.savez_compressed(path, **arrays)


def write_config(path: Path, *, npz: Path, sites: int, rounds: int) -> None:
    """The demo's settings on ``npz``, IID over ``sites`` sites, baselines off."""
    path.write_text(
        f"""[data]
source = "medmnist"
path = "{npz}"

[partition]
method = "iid"
num_sites = {sites}
min_examples_per_site = 1

[task]
name = "classification"
num_classes = 2
positive_label = 1
width = {WIDTH}

[strategy]
name = "fedavg"

[federation]
rounds = {rounds}
fraction = 1.0
min_sites = 2
local_epochs = 1
lr = {LR}
batch_size = {BATCH}
optimizer = "adam"
seed = {SEED}

[baselines]
pooled = false
local = false

[runtime]
name = "inprocess"
device = "cpu"
torch_threads = 1
"""
    )


def plain(npz: Path, sites: int, rounds: int) -> dict[str, float]:
    """The plain script: FedAvg written directly in PyTorch, with per-round scoring."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from flmi.tasks.models import SmallCNN  # the same network, nothing else from flmi

    torch.set_num_threads(1)
    with np.load(npz) as f:
        data = {
            s: (
                torch.from_numpy(f[f"{s}_images"][:, None].astype(np.float32) / 255.0),
                torch.from_numpy(f[f"{s}_labels"][:, 0].astype(np.int64)),
            )
            for s in SHARES
        }
    rng = np.random.default_rng(SEED)
    parts = {
        s: np.array_split(rng.permutation(len(data[s][1])), sites) for s in SHARES
    }  # IID: each split shuffled and cut into equal sites
    site = [
        {s: (data[s][0][parts[s][k]], data[s][1][parts[s][k]]) for s in SHARES}
        for k in range(sites)
    ]
    torch.manual_seed(SEED)
    model = SmallCNN(in_channels=1, num_classes=2, spatial_dims=2, width=WIDTH)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    total = float(sum(len(d["train"][1]) for d in site))

    def score(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1) if len(y) else torch.zeros(0, 2)
        return float((probs.argmax(1) == y).float().mean()) if len(y) else float("nan")

    started = time.perf_counter()
    for rnd in range(1, rounds + 1):
        acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        for k, d in enumerate(site):
            x, y = d["train"]
            model.load_state_dict(global_state)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=LR)
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(rnd * sites + k))
            for i in range(0, len(y), BATCH):
                idx = order[i : i + BATCH]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            for name, v in model.state_dict().items():
                acc[name] += (len(y) / total) * v.double()
        global_state = {name: v.to(global_state[name].dtype) for name, v in acc.items()}
        model.load_state_dict(global_state)
        test = [score(*d["test"]) for d in site]
        val = [score(*d["val"]) for d in site]
        central = score(*data["test"])
        print(
            f"round {rnd}: central accuracy {central:.3f}, site mean test {np.nanmean(test):.3f}, "
            f"val {np.nanmean(val):.3f}"
        )
    return {"loop_s": time.perf_counter() - started}


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout


def measure(tmp: Path, npz: Path, sites: int, rounds: int) -> dict[str, float]:
    """One size: the plain script, then ``flmi run``, each in a fresh process."""
    plain_wall, out = _timed(
        [sys.executable, __file__, "--plain", str(npz), str(sites), str(rounds)]
    )
    plain_loop = float(json.loads(out.strip().splitlines()[-1])["loop_s"])
    config, run = tmp / f"sites{sites}.toml", tmp / f"run{sites}"
    write_config(config, npz=npz, sites=sites, rounds=rounds)
    flmi_wall, _ = _timed([sys.executable, "-m", "flmi.cli", "run", str(config), "--out", str(run)])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    flmi_loop = sum(x["wall_s"] for x in lines if x["arm"] == "federated")
    return {
        "plain_wall": plain_wall,
        "flmi_wall": flmi_wall,
        "plain_loop": plain_loop,
        "flmi_loop": flmi_loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,50,200", help="site counts, comma-separated")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plain", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain(Path(args.plain[0]), int(args.plain[1]), int(args.plain[2]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        npz = tmp / "images.npz"
        write_npz(npz, args.images)
        print(
            f"flmi run vs plain PyTorch: {args.images} images 28x28, {args.rounds} rounds, "
            "IID sites, baselines off, default report settings, torch threads 1"
        )
        print(
            f"{'sites':>5} {'plain s':>8} {'flmi s':>8} {'end to end':>11} "
            f"{'plain loop s':>13} {'flmi loop s':>12} {'loop':>6}"
        )
        for sites in sizes:
            m = measure(tmp, npz, sites, args.rounds)
            print(
                f"{sites:>5} {m['plain_wall']:>8.1f} {m['flmi_wall']:>8.1f} "
                f"{m['flmi_wall'] / m['plain_wall']:>10.2f}x {m['plain_loop']:>13.1f} "
                f"{m['flmi_loop']:>12.1f} {m['flmi_loop'] / m['plain_loop']:>5.2f}x",
                flush=True,
            )
        print("goal: end to end <= 1.3x, loop <= 1.1x")


if __name__ == "__main__":
    main()
