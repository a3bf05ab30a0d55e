"""Command line.

``flmi run | demo | strategies | config keys | report | predict | audit`` for a simulated
federation, ``flmi init | examples`` to start a project from a template,
``flmi certs | server | client | audit-log`` for a real deployment, and
``flmi replay | inspect | contributions | debug`` for a run's record
(:mod:`flmi.forensics.commands`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flmi.config import Config, load_config
from flmi.core.errors import FlmiError
from flmi.core.federation import RoundRecord
from flmi.core.keys import Metric
from flmi.forensics import commands as forensics
from flmi.init_project import add_commands as add_project_commands
from flmi.progress import RoundProgress, round_line
from flmi.progress import fmt as _fmt
from flmi.strategies.registry import STRATEGIES

console = Console()
HEADERS = {
    Metric.AUC: "auc",
    Metric.BALANCED_ACCURACY: "bal.acc",
    Metric.ACCURACY: "acc",
    Metric.SENSITIVITY: "sens",
    Metric.SPECIFICITY: "spec",
    Metric.MAE: "mae",
    Metric.RMSE: "rmse",
    Metric.R2: "r2",
    Metric.C_INDEX: "c-index",
}
TABLE_METRICS = (
    Metric.AUC,
    Metric.BALANCED_ACCURACY,
    Metric.ACCURACY,
    Metric.SENSITIVITY,
    Metric.SPECIFICITY,
)
REGRESSION_METRICS = (Metric.MAE, Metric.RMSE, Metric.R2)
SURVIVAL_METRICS = (Metric.C_INDEX, Metric.LOSS)


def show_round(record: RoundRecord, rounds: int) -> None:
    """One progress line per round with the current metrics."""
    console.print(round_line(record, rounds), highlight=False)


def _table_columns(arms: dict[str, object]) -> list[str]:
    """The task's headline metrics that occur, then any other (Dice, per-label AUC)."""
    from flmi.report.summary import ArmResult

    present: set[str] = set()
    for result in arms.values():
        assert isinstance(result, ArmResult)
        for metrics in [result.global_metrics or {}, result.site_mean, *result.per_site.values()]:
            present.update(metrics)
    if Metric.C_INDEX in present:
        preset: tuple[Metric, ...] = SURVIVAL_METRICS
    elif Metric.MAE in present:
        preset = REGRESSION_METRICS
    else:
        preset = TABLE_METRICS
    known = [m.value for m in preset if m in present]
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


def check_inputs(config: Config) -> None:
    """Raise the error of a missing input file now, before a run's start line is printed.

    A ``data.path`` or ``task.init_weights`` that names nothing is handed to
    the code a run reads it with, so the error is that source's own, with its
    own fix; present files are left for the run to read.

    Raises
    ------
    FlmiError
        The missing file's error (a :class:`flmi.core.errors.DataError` naming the key).
    """
    if config.data.path and not Path(config.data.path).exists():
        from flmi.data.sources import load_data

        load_data(config)  # a source that ignores data.path generates its data and passes
    if config.task.init_weights and not Path(config.task.init_weights).is_file():
        from flmi.tasks.transfer import read_weights

        read_weights(Path(config.task.init_weights))


def _run(config: Config, out: Path, *, resume: bool = False, break_after: int | None = None) -> int:
    from flmi.forensics.breakpoint import BreakpointReached
    from flmi.simulation import run_experiment

    check_inputs(config)
    console.print(
        f"flmi: {config.strategy.name} on {config.partition.num_sites} sites, "
        f"{config.federation.rounds} rounds -> {out}" + (" (resuming)" if resume else "")
    )
    try:
        with RoundProgress(console=console) as progress:
            result = run_experiment(
                config=config,
                out=out,
                progress=progress,
                resume=resume,
                break_after_round=break_after,
            )
    except BreakpointReached as stop:
        console.print(f"{stop}: flmi run ... --out {out} --resume")
        return 0
    show_summary(dict(result.arms))
    _write_report(out)
    console.print(f"run directory: {out}")
    return 0


def _write_report(run_dir: Path) -> Path:
    from flmi.report.html import build_report

    path = build_report(run_dir)
    console.print(f"report: {path}")
    return path


def _predict(args: argparse.Namespace) -> int:
    from flmi.predict import predict_files

    out = args.out or args.run_dir / "predictions.csv"
    count = predict_files(
        run_dir=args.run_dir, paths=args.images, out=out, device=args.device, split=args.split
    )
    console.print(f"{count} images scored -> {out}")
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
    _add_run_commands(sub)
    _add_model_commands(sub)
    _add_certs_command(sub)
    _add_deploy_commands(sub)
    forensics.add_commands(sub)
    add_project_commands(sub)
    return parser


#: What ``add_subparsers()`` returns: the ``flmi`` subcommands.
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_run_commands(sub: _Commands) -> None:
    """``flmi run``, ``demo``, ``strategies`` and ``report``: simulations and their reports."""
    run = sub.add_parser("run", help="run a federation (and its baselines) from a TOML config")
    run.add_argument("config", type=Path, help="the TOML config file")
    run.add_argument("--out", type=Path, help="run directory to create (default: runs/NAME-TIME)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out after its last checkpointed round",
    )
    run.add_argument(
        "--break-after-round",
        type=int,
        metavar="R",
        help="stop cleanly after round R (checkpoint and record written); --resume continues",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by its dotted path, e.g. --set strategy.name=fedavg; "
        "`flmi config keys [TABLE]` lists every key with its type and default",
    )
    demo = sub.add_parser("demo", help="4 generated hospitals, FedAvg vs pooled vs local, offline")
    demo.add_argument("--out", type=Path, help="run directory to create (default: runs/demo-TIME)")
    demo.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the demo config; `flmi config keys [TABLE]` lists them",
    )
    sub.add_parser("strategies", help="list the algorithm names [strategy] name accepts")
    config = sub.add_parser("config", help="what a config may hold")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    keys = config_sub.add_parser(
        "keys", help="every config key with its type, default and range, as TOML you can copy"
    )
    keys.add_argument(
        "table", nargs="?", help="only this table, e.g. federation, strategy, data.transforms"
    )
    report = sub.add_parser("report", help="write RUN_DIR/report.html (plots, intervals)")
    report.add_argument("run_dir", type=Path, help="a finished run directory")


def _add_model_commands(sub: _Commands) -> None:
    """``flmi predict`` and ``audit``: what a finished run's model and updates give away."""
    predict = sub.add_parser("predict", help="score images with a run's final model")
    predict.add_argument("run_dir", type=Path, help="a finished run directory")
    predict.add_argument("images", type=Path, nargs="+", help=".npz, .png, .jpg or .jpeg files")
    predict.add_argument("--out", type=Path, help="CSV to write (default: RUN_DIR/predictions.csv)")
    predict.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="for a MedMNIST .npz: score only this split (default: every split it holds)",
    )
    predict.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], help="default: the run's [runtime] device"
    )
    audit = sub.add_parser(
        "audit",
        help="attack a run's updates as its server could: gradient inversion, membership inference",
    )
    audit.add_argument(
        "path", type=Path, help="a run directory, or a TOML config (run first, into --out)"
    )
    audit.add_argument("--out", type=Path, help="for a config: the run directory to create")
    audit.add_argument("--site", help="the attacked site (default: the first by name)")
    audit.add_argument("--batches", type=int, default=4, help="batches attacked (default 4)")
    audit.add_argument("--iterations", type=int, default=800, help="attack steps per batch")
    audit.add_argument("--seed", type=int, default=0, help="seeds the attack")
    audit.add_argument(
        "--reference-epochs",
        type=int,
        default=100,
        help="epochs of the overfit reference model, the membership attack's check (default 100)",
    )
    audit.add_argument(
        "--shadow-models",
        type=int,
        default=2,
        help="shadow models calibrating the membership attack; 0 leaves it out (default 2)",
    )
    audit.add_argument(
        "--candidates",
        type=int,
        default=0,
        help="members and held-out images per site for the update attack (default 0: all)",
    )
    audit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _add_certs_command(sub: _Commands) -> None:
    """``flmi certs init | add-site``: the consortium CA and its bundles."""
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


def _add_deploy_commands(sub: _Commands) -> None:
    """``flmi server``, ``client`` and ``audit-log``: a real federation over gRPC."""
    server = sub.add_parser("server", help="run a federation as its server, over gRPC with mTLS")
    server.add_argument("--config", type=Path, required=True, help="the federation's TOML config")
    server.add_argument("--certs", type=Path, required=True, help="the server bundle folder")
    server.add_argument("--address", required=True, help="HOST:PORT to listen on")
    server.add_argument("--out", type=Path, help="run directory (default: runs/NAME-TIME)")
    server.add_argument(
        "--resume", action="store_true", help="continue the run in --out after its last round"
    )
    client = sub.add_parser("client", help="take part in a federation as one site")
    client.add_argument("--server", required=True, help="the server's HOST:PORT")
    client.add_argument("--site", required=True, help="this site's name (its certificate's)")
    client.add_argument("--certs", type=Path, required=True, help="this site's bundle folder")
    client.add_argument("--data", type=Path, required=True, help="this site's SITE.toml")
    audit = sub.add_parser("audit-log", help="check an audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain of an audit log")
    verify.add_argument("file", type=Path)


def _deploy(args: argparse.Namespace) -> int:
    """``flmi server``, ``flmi client`` and ``flmi audit-log``."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        console.print("[red]error:[/red] this command needs grpcio: pip install 'flmi[deploy]'")
        return 2
    if args.command == "audit-log":
        from flmi.runtime.grpc.audit import verify_lines

        checked = verify_lines(args.file)
        print(f"{args.file}: {checked.lines} lines, chain intact; last line's hash {checked.head}")
        return 0
    if args.command == "client":
        from flmi.runtime.grpc.client import ClientExitError
        from flmi.runtime.grpc.clientapp import build_client

        site_client = build_client(
            server=args.server, site=args.site, certs=args.certs, data=args.data
        )
        try:
            status = site_client.run()
        except ClientExitError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            return exc.status
        if site_client.stopped:
            console.print(f"site {args.site}: stopped; start the client again to rejoin")
        else:
            console.print(f"site {args.site}: the run is over")
        return status
    from flmi.runtime.grpc.server import serve

    config = load_config(args.config)
    if args.resume and args.out is None:
        console.print("[red]error:[/red] --resume needs --out: the run directory to continue")
        return 2
    out = args.out or _default_out(args.config.stem)
    with RoundProgress(console=console) as progress:
        result = serve(
            config=config,
            certs=args.certs,
            address=args.address,
            out=out,
            resume=args.resume,
            progress=progress,
            on_listening=lambda bound: print(f"flmi server listening on {bound}", flush=True),
        )
    if result.stopped:
        console.print(f"stopped after round {result.completed_round}; resume with --resume")
        return 0
    console.print(f"run directory: {out}")
    return 0


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


def _audit(args: argparse.Namespace) -> int:
    from flmi.config import apply_overrides, config_from_dict, read_toml
    from flmi.privacy.audit import MEMBERSHIP_SANITY_AUC, AttackSettings, run_audit

    settings = AttackSettings(
        batches=args.batches,
        iterations=args.iterations,
        seed=args.seed,
        reference_epochs=args.reference_epochs,
        shadow_models=args.shadow_models,
        candidates=args.candidates,
    )
    if args.path.is_dir():
        run_dir = args.path
        raw = apply_overrides(read_toml(run_dir / "config.toml"), args.overrides)
        config = config_from_dict(raw)
    else:
        config = load_config(args.path, overrides=args.overrides)
        run_dir = args.out or _default_out(args.path.stem)
        _run(config, run_dir)
    report = run_audit(
        config=config, run_dir=run_dir, out=run_dir / "audit", site=args.site, settings=settings
    )
    summary = report.to_json()
    table = Table(
        title=f"Privacy audit of site {report.site}'s round-{report.attacked_round} update "
        f"(the server as attacker; batch {report.batch_size})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("PSNR of reconstructions (dB)", f"{summary['psnr_mean']:.2f}")
    table.add_row("PSNR of an unrelated image (dB)", f"{summary['unrelated_psnr_mean']:.2f}")
    table.add_row("PSNR of the mean test image (dB)", _fmt(summary["mean_image_psnr_mean"]))
    table.add_row("SSIM of reconstructions", f"{summary['ssim_mean']:.3f}")
    table.add_row("SSIM of an unrelated image", f"{summary['unrelated_ssim_mean']:.3f}")
    table.add_row("label recovery rate", f"{report.label_recovery_rate:.3f}")
    table.add_row("final model's mean loss, training examples", _fmt(report.member_loss))
    table.add_row("final model's mean loss, test examples", _fmt(report.nonmember_loss))
    table.add_row("membership-inference AUC (final model)", _fmt(report.membership_auc))
    table.add_row(
        f"same, calibrated by {report.shadow_models} shadow models",
        _fmt(report.calibrated_membership_auc),
    )
    table.add_row(
        f"same attack on a model overfit without DP ({report.reference_members} members)",
        _fmt(report.reference_membership_auc),
    )
    for site, auc in sorted((report.update_membership_auc or {}).items()):
        calibrated = (report.update_membership_calibrated_auc or {}).get(site)
        table.add_row(
            f"membership AUC from {site}'s round-{report.attacked_round} update (calibrated)",
            f"{auc:.3f} ({_fmt(calibrated)})",
        )
    console.print(table)
    if not report.membership_meaningful:
        console.print(
            "[yellow]The membership attack does not separate the members of a model overfit "
            f"without DP (AUC under {MEMBERSHIP_SANITY_AUC}): it is too weak, and its figure on "
            "this run says nothing about privacy.[/yellow]"
        )
    console.print(f"images and audit.json in {run_dir / 'audit'}")
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
        if args.command == "config":
            from flmi.config.keys_listing import listing, render

            print(render(listing(args.table)), end="")
            return 0
        if args.command in ("init", "examples"):
            from flmi.init_project import run_command

            return run_command(args)
        if args.command == "certs":
            return _certs(args)
        if args.command == "report":
            _write_report(args.run_dir)
            return 0
        if args.command == "predict":
            return _predict(args)
        if args.command == "audit":
            return _audit(args)
        if args.command in forensics.NAMES:
            return forensics.run_command(args)
        if args.command in ("server", "client", "audit-log"):
            return _deploy(args)
        if args.command == "demo":
            config = load_config(demo_config_path(), overrides=args.overrides)
            return _run(config, args.out or _default_out("demo"))
        if args.resume and args.out is not None:  # a missing plug-in is named before its name
            from flmi.report.plugins import check_plugins

            check_plugins(args.out, command="--resume")
        config = load_config(args.config, overrides=args.overrides)
        if args.resume and args.out is None:
            console.print("[red]error:[/red] --resume needs --out: the run directory to continue")
            return 2
        out = args.out or _default_out(args.config.stem)
        return _run(config, out, resume=args.resume, break_after=args.break_after_round)
    except FlmiError as exc:  # one line however long: the terminal wraps it, not rich
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
