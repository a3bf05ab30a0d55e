"""Command line: ``flmi run | demo | strategies``."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flmi.config import Config, load_config
from flmi.core.errors import FlmiError
from flmi.core.federation import RoundRecord
from flmi.core.keys import Metric, SegmentationMetric
from flmi.strategies.registry import STRATEGIES

console = Console()
HEADERS = {
    Metric.AUC: "auc",
    Metric.BALANCED_ACCURACY: "bal.acc",
    Metric.ACCURACY: "acc",
    Metric.SENSITIVITY: "sens",
    Metric.SPECIFICITY: "spec",
}
TABLE_METRICS = (
    Metric.AUC,
    Metric.BALANCED_ACCURACY,
    Metric.ACCURACY,
    Metric.SENSITIVITY,
    Metric.SPECIFICITY,
)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def show_round(record: RoundRecord, rounds: int) -> None:
    """One progress line per round with the current metrics."""
    scores = record.global_metrics or record.site_mean
    parts = [
        f"{m.value} {_fmt(scores.get(m))}"
        for m in (Metric.AUC, Metric.ACCURACY, SegmentationMetric.DICE, Metric.LOSS)
        if m in scores
    ]
    failed = (
        f"  [red]failed: {', '.join(sorted(record.sites_failed))}[/red]"
        if record.sites_failed
        else ""
    )
    console.print(
        f"[bold]{record.arm:>9}[/bold] round {record.rnd:>3}/{rounds}  "
        + "  ".join(parts)
        + f"  ({record.wall_s:.1f} s){failed}"
    )


def _table_columns(arms: dict[str, object]) -> list[str]:
    """The classification columns that occur, then any other metric (Dice, per-label AUC)."""
    from flmi.report.summary import ArmResult

    present: set[str] = set()
    for result in arms.values():
        assert isinstance(result, ArmResult)
        for metrics in [result.global_metrics or {}, result.site_mean, *result.per_site.values()]:
            present.update(metrics)
    known = [m.value for m in TABLE_METRICS if m in present]
    others = sorted(present - set(known) - {Metric.LOSS.value})
    return known + others


def show_summary(arms: dict[str, object]) -> None:
    """A table of every arm: central test, each site's own test split, and site_mean."""
    from flmi.report.summary import ArmResult

    table = Table(title="Final-round test metrics")
    table.add_column("arm")
    table.add_column("test set")
    columns = _table_columns(arms)
    for m in columns:
        table.add_column({str(k): v for k, v in HEADERS.items()}.get(m, m), justify="right")
    for arm, result in arms.items():
        assert isinstance(result, ArmResult)
        rows: list[tuple[str, dict[str, float] | None]] = [
            ("central", dict(result.global_metrics or {}))
        ]
        rows += [(s, dict(m)) for s, m in sorted(result.per_site.items())]
        rows.append(("site_mean", dict(result.site_mean)))
        for i, (where, metrics) in enumerate(rows):
            table.add_row(
                arm if i == 0 else "", where, *[_fmt((metrics or {}).get(m)) for m in columns]
            )
        table.add_section()
    console.print(table)


def _default_out(stem: str) -> Path:
    return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _run(config: Config, out: Path, *, resume: bool = False) -> int:
    from flmi.simulation import run_experiment

    console.print(
        f"flmi: {config.strategy.name} on {config.partition.num_sites} sites, "
        f"{config.federation.rounds} rounds -> {out}" + (" (resuming)" if resume else "")
    )
    result = run_experiment(config=config, out=out, progress=show_round, resume=resume)
    show_summary(dict(result.arms))
    console.print(f"run directory: {out}")
    return 0


def demo_config_path() -> Path:
    """The bundled demo config (also at ``examples/demo.toml`` in the repository)."""
    return Path(__file__).resolve().parent / "examples" / "demo.toml"


def build_parser() -> argparse.ArgumentParser:
    """The ``flmi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="flmi", description="Federated learning for medical imaging."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a federation (and its baselines) from a TOML config")
    run.add_argument("config", type=Path, help="the TOML config file")
    run.add_argument("--out", type=Path, help="run directory to create (default: runs/NAME-TIME)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out after its last checkpointed round",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by its dotted path, e.g. --set strategy.name=fedavg",
    )
    demo = sub.add_parser("demo", help="4 generated hospitals, FedAvg vs pooled vs local, offline")
    demo.add_argument("--out", type=Path, help="run directory to create (default: runs/demo-TIME)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("strategies", help="list the algorithm names [strategy] name accepts")
    certs = sub.add_parser("certs", help="consortium certificates for a real deployment")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create a consortium CA and the server's bundle")
    init.add_argument("ca_dir", type=Path, help="folder for the CA (its key never leaves it)")
    init.add_argument("--server-name", default="localhost", help="the server's DNS name")
    init.add_argument("--days", type=int, default=365, help="certificate validity in days")
    add = certs_sub.add_parser("add-site", help="write a site bundle signed by the CA")
    add.add_argument("ca_dir", type=Path)
    add.add_argument("name", help="the site's name: its certificate's common name")
    add.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    add.add_argument("--csr", type=Path, help="a signing request made at the site (no key sent)")
    add.add_argument("--days", type=int, default=365)
    return parser


def _certs(args: argparse.Namespace) -> int:
    try:
        from flmi.runtime.grpc.provisioning import add_site, init_ca
    except ImportError:
        console.print(
            "[red]error:[/red] `flmi certs` needs cryptography: pip install 'flmi[deploy]'"
        )
        return 2
    if args.certs_command == "init":
        server = init_ca(ca_dir=args.ca_dir, server_name=args.server_name, days=args.days)
        console.print(f"CA in {args.ca_dir} (keep ca.key there); server bundle in {server}")
        return 0
    bundle = add_site(
        ca_dir=args.ca_dir, name=args.name, out=args.out, csr=args.csr, days=args.days
    )
    console.print(f"site bundle for '{args.name}' in {bundle}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flmi`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "strategies":
            for name, spec in sorted(STRATEGIES.items()):
                print(f"{name:<17}{spec.summary}")
                for key, option in spec.options.items():
                    print(f"{'':<19}{key} = {option.default!r}  ({option.help})")
            return 0
        if args.command == "certs":
            return _certs(args)
        if args.command == "demo":
            config = load_config(demo_config_path(), overrides=args.overrides)
            return _run(config, args.out or _default_out("demo"))
        config = load_config(args.config, overrides=args.overrides)
        if args.resume and args.out is None:
            console.print("[red]error:[/red] --resume needs --out: the run directory to continue")
            return 2
        return _run(config, args.out or _default_out(args.config.stem), resume=args.resume)
    except FlmiError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
