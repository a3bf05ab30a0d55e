"""``flmi replay``, ``flmi inspect`` and ``flmi contributions``: forensics of a recorded run."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TypeAlias

from rich.console import Console
from rich.table import Table

from flmi.core.keys import Manifest

console = Console()

#: What ``add_subparsers()`` returns: the ``flmi`` subcommands.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: The subcommands this module runs.
NAMES = ("replay", "inspect", "contributions", "debug")


def add_commands(sub: Commands) -> None:
    """Register ``flmi replay``, ``inspect`` and ``contributions``."""
    replay = sub.add_parser(
        "replay", help="aggregate a recorded round again, with no training (record.updates)"
    )
    replay.add_argument("run_dir", type=Path, help="a run directory with a record")
    replay.add_argument("--round", dest="rnd", type=int, required=True, help="the round")
    replay.add_argument("--out", type=Path, required=True, help="the FILE.safetensors to write")
    replay.add_argument(
        "--without",
        nargs="+",
        metavar="SITE",
        default=[],
        help="leave these sites out from --round on, to the last round (FedDebug's "
        "approximation: the others' recorded changes are reapplied)",
    )
    replay.add_argument("--strategy", help="combine the round's updates with this rule instead")
    inspect = sub.add_parser("inspect", help="per-site update norms, cosines and outliers")
    inspect.add_argument("run_dir", type=Path, help="a run directory with a record")
    inspect.add_argument("--round", dest="rnd", type=int, required=True, help="the round")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument("--layers", action="store_true", help="also print each layer's numbers")
    _add_contributions(sub)
    debug = sub.add_parser(
        "debug", help="rank the sites of a round by FedDebug's neuron differential test"
    )
    debug.add_argument("run_dir", type=Path, help="a run directory with a record")
    debug.add_argument("--round", dest="rnd", type=int, help="the round (default: the last)")
    debug.add_argument("--inputs", type=int, default=100, help="random inputs (default 100)")
    debug.add_argument(
        "--threshold", type=float, default=0.5, help="active above this share of the layer's max"
    )
    debug.add_argument("--seed", type=int, default=0, help="seeds the random inputs")
    debug.add_argument("--json", action="store_true", help="print JSON instead of SITE SCORE lines")


def _add_contributions(sub: Commands) -> None:
    c = sub.add_parser(
        "contributions",
        help="each site's Shapley and leave-one-out value, from the record (simulation)",
    )
    c.add_argument("run_dir", type=Path, help="a simulated run directory with a record")
    c.add_argument("--metric", help="validation metric (default: auc, dice, r2 or c_index)")
    c.add_argument(
        "--method",
        choices=["auto", "exact", "gtg"],
        default="auto",
        help="exact enumeration (up to 8 sites a round), GTG-Shapley sampling, or auto "
        "(exact up to 4 sites)",
    )
    c.add_argument("--strategy", help="combine coalitions with this rule instead of the run's")
    c.add_argument(
        "--between-eps",
        type=float,
        default=1e-3,
        help="skip a round that moved the score less than this (default 0.001)",
    )
    c.add_argument(
        "--within-eps",
        type=float,
        default=1e-3,
        help="GTG: stop scoring a permutation once within this of the round's score",
    )
    c.add_argument(
        "--max-permutations", type=int, default=0, help="GTG: at most this many (0: 10 x sites)"
    )
    c.add_argument("--seed", type=int, default=0, help="GTG: seeds the permutations")
    c.add_argument(
        "--val-examples",
        type=int,
        default=0,
        help="score on this many validation examples, drawn once (default 0: all)",
    )
    c.add_argument("--json", action="store_true", help="print the section as JSON")


def run_command(args: argparse.Namespace) -> int:
    """Run one of :data:`NAMES`; the exit status."""
    if args.command == "replay":
        return _replay(args)
    if args.command == "contributions":
        return _contributions(args)
    if args.command == "debug":
        return _debug(args)
    return _inspect(args)


def _replay(args: argparse.Namespace) -> int:
    from flmi.core.errors import ConfigError
    from flmi.forensics.reader import RecordReader
    from flmi.forensics.replay import (
        counterfactual,
        reaggregate,
        recorded_strategy,
        replay_round,
    )
    from flmi.tensorio import save_tensors

    reader = RecordReader(run_dir=args.run_dir)
    if args.without and args.strategy:
        raise ConfigError("--without and --strategy answer different questions: give one")
    strategy = recorded_strategy(reader, name=args.strategy)
    if args.without:
        params = counterfactual(reader, strategy, from_round=args.rnd, without=args.without)
        what = f"without {', '.join(args.without)} from round {args.rnd} to the last round"
    elif args.strategy:
        params = reaggregate(reader, strategy, args.rnd)
        what = f"round {args.rnd} re-aggregated with {strategy.name}"
    else:
        params = replay_round(reader, strategy, args.rnd)
        what = f"round {args.rnd} replayed, bit for bit equal to the recorded model"
    save_tensors(
        path=args.out,
        tensors=params,
        meta={
            Manifest.ROUND: args.rnd,
            Manifest.STRATEGY: strategy.name,
            "without": list(args.without),
            "source": str(args.run_dir),
        },
    )
    console.print(f"{what} -> {args.out}")
    return 0


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4g}"


def _inspect(args: argparse.Namespace) -> int:
    from flmi.forensics.inspect import inspect_round, inspection_json
    from flmi.forensics.reader import RecordReader

    sites = inspect_round(RecordReader(run_dir=args.run_dir), args.rnd)
    if args.json:
        print(json.dumps(inspection_json(args.rnd, sites), indent=2, sort_keys=True))
        return 0
    table = Table(title=f"Round {args.rnd}: each site's update against the aggregate")
    for column in (
        "site",
        "examples",
        "weight",
        "norm",
        "cosine",
        "cos. median",
        "norm z",
        "cos. median z",
        "outlier",
    ):
        table.add_column(column, justify="left" if column == "site" else "right")
    for s in sites:
        table.add_row(
            s.site,
            str(s.num_examples),
            f"{s.weight:.3f}",
            _fmt(s.norm),
            _fmt(s.cosine),
            _fmt(s.cosine_median),
            _fmt(s.norm_z),
            _fmt(s.cosine_z),
            "[red]yes[/red]" if s.outlier else "",
        )
    console.print(table)
    if args.layers:
        layers = Table(title="Per layer: norm / cosine to the aggregate")
        layers.add_column("layer")
        for s in sites:
            layers.add_column(s.site, justify="right")
        for name in sites[0].layers if sites else ():
            layers.add_row(
                name, *[f"{_fmt(s.layers[name][0])} / {_fmt(s.layers[name][1])}" for s in sites]
            )
        console.print(layers)
    return 0


def _contributions(args: argparse.Namespace) -> int:
    from flmi.core.keys import Record
    from flmi.forensics.contribution import ContributionSettings
    from flmi.forensics.contributions_file import CONTRIBUTIONS, write_contributions
    from flmi.forensics.shapley import GtgSettings

    settings = ContributionSettings(
        method=args.method,
        between_eps=args.between_eps,
        gtg=GtgSettings(
            within_eps=args.within_eps, max_permutations=args.max_permutations, seed=args.seed
        ),
    )
    written = write_contributions(
        run_dir=args.run_dir,
        metric=args.metric,
        settings=settings,
        strategy=args.strategy,
        max_examples=args.val_examples,
    )
    section = written.get(Record.CONTRIBUTIONS, written)
    if args.json:
        print(json.dumps(section, indent=2, sort_keys=True))
        return 0
    table = Table(
        title=f"Contribution to the validation {section[Manifest.METRIC]} "
        f"({section[Manifest.METHOD]}, {len(section[Manifest.ROUNDS_SCORED])} rounds scored)"
    )
    for column in ("rank", "site", "Shapley", "leave-one-out"):
        table.add_column(column, justify="left" if column == "site" else "right")
    for rank, site in enumerate(section[Manifest.RANKING], start=1):
        values = section[Manifest.SITES][site]
        table.add_row(
            str(rank),
            site,
            f"{values[Manifest.SHAPLEY]:+.4f}",
            f"{values[Manifest.LEAVE_ONE_OUT]:+.4f}",
        )
    console.print(table)
    console.print(
        f"{section[Manifest.COALITIONS]} coalitions scored in {section[Manifest.WALL_S]} s "
        f"-> {args.run_dir / CONTRIBUTIONS}"
    )
    return 0


def _debug(args: argparse.Namespace) -> int:
    from flmi.forensics.debug_run import debug_round
    from flmi.forensics.feddebug import DebugSettings, ranking_json

    rnd, ranking = debug_round(
        args.run_dir,
        rnd=args.rnd,
        settings=DebugSettings(inputs=args.inputs, threshold=args.threshold, seed=args.seed),
    )
    if args.json:
        print(json.dumps(ranking_json(rnd, ranking), indent=2, sort_keys=True))
        return 0
    for site, score in ranking:
        print(f"{site} {score:.4f}")
    return 0
