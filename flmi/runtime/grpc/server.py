"""``flmi server``: the coordinating centre of a real federation.

It runs the same round loop, strategy, checkpoints and run directory as
``flmi run``; only the runtime differs (:class:`GrpcRuntime`). The server
holds no data: sites score the model on their own splits, and there is no
central test set. Under ``privacy.aggregation = "secagg"`` or ``"he"`` the same
:class:`flmi.core.exchange.SecureAggregation` as in simulation drives the
protocol's stages through the gRPC runtime; the server sees masked sums or
ciphertexts under a public context, never a site's own update.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import torch

from flmi.config import Config, training_hparams
from flmi.core.errors import ConfigError, RoundFailedError
from flmi.core.exchange import SecureAggregation
from flmi.core.federation import (
    FederationPlan,
    FederationResult,
    ResumePoint,
    RoundRecord,
    run_federation,
)
from flmi.core.keys import Arm
from flmi.core.messages import HParamValue
from flmi.core.params import Params
from flmi.core.strategy import StateRecord, Strategy
from flmi.data.source_registry import source_for
from flmi.forensics.record import open_recorder
from flmi.privacy.noise_source import refuse_in_deployment
from flmi.privacy.setup import build_secure
from flmi.report.resume import open_run, record_from_line
from flmi.report.rundir import RunDir
from flmi.report.summary import versions
from flmi.report.summary_schema import ArmSummary, Summary
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.coordinator import Coordinator, GrpcRuntime, StopRequestedError
from flmi.runtime.grpc.interceptor import RevocationList, SiteAuthInterceptor
from flmi.runtime.grpc.secure import AggregationPlan, privacy_summary
from flmi.runtime.grpc.service import FederationService, ServiceSettings
from flmi.runtime.grpc.tls import server_credentials
from flmi.runtime.grpc.transport import add_federation_service
from flmi.tasks.base import Task
from flmi.tasks.registry import task_for_shape
from flmi.tasks.torch_params import params_copy
from flmi.wiring import make_strategy, model_meta, site_overrides

log = logging.getLogger("flmi.server")
AUDIT_LOG = "audit.jsonl"
DONE_GRACE_S = 10.0


def server_options(*, max_message_bytes: int, heartbeat_s: float) -> list[tuple[str, int]]:
    """gRPC options: the message limit, and keepalive pings that notice a vanished site."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # A killed process closes its connection at once; pings find a vanished machine.
        ("grpc.keepalive_time_ms", int(max(heartbeat_s, 10.0) * 1000)),
        ("grpc.keepalive_timeout_ms", int(max(3 * heartbeat_s, 20.0) * 1000)),
    ]


def deployment_task(config: Config) -> Task:
    """The task as the server builds it, without data: shape from ``[task]``."""
    t = config.task
    in_channels, spatial_dims = t.in_channels, t.spatial_dims
    if (known := source_for(config.data.source).input_shape) is not None:
        in_channels = known[0] if in_channels is None else in_channels
        spatial_dims = known[1] if spatial_dims is None else spatial_dims
    if in_channels is None or spatial_dims is None:
        raise ConfigError(
            "the server holds no data, so it cannot read the input shape: set task.in_channels "
            "and task.spatial_dims (0 for tabular features, 2 for images, 3 for volumes)"
        )
    return task_for_shape(config, in_channels=in_channels, spatial_dims=spatial_dims)


def site_plans(config: Config) -> dict[str, dict[str, HParamValue]]:
    """Each site's local-training settings, as the plan it is shown at register."""
    base = training_hparams(config)
    overrides = site_overrides(config)
    return {site: {**base, **overrides.get(site, {})} for site in config.deploy.sites}


@dataclass(frozen=True)
class ServerResult:
    """What a server run left: the run directory and the last finished round."""

    path: Path
    completed_round: int
    stopped: bool


class _Observer:
    """Appends each round to ``metrics.jsonl``, checkpoints it, and tells the coordinator."""

    def __init__(
        self,
        *,
        run: RunDir,
        strategy: str,
        coordinator: Coordinator,
        progress: Callable[[RoundRecord, int], None] | None,
        rounds: int,
    ) -> None:
        self._run, self._strategy, self._c = run, strategy, coordinator
        self._progress, self._rounds = progress, rounds

    def on_round(self, record: RoundRecord, params: Params, state: StateRecord) -> None:
        self._run.append_metrics(record)
        self._run.write_checkpoint(
            rnd=record.rnd, arm=record.arm, params=params, state=state, strategy=self._strategy
        )
        with self._c.cond:
            self._c.completed_round = record.rnd
        if self._progress is not None:
            self._progress(record, self._rounds)


def serve(
    *,
    config: Config,
    certs: Path,
    address: str,
    out: Path,
    resume: bool = False,
    progress: Callable[[RoundRecord, int], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> ServerResult:
    """Run a federation as its server until every round is done or SIGTERM arrives.

    Parameters
    ----------
    config
        The federation config; ``[deploy] sites`` lists who may connect.
    certs
        The server bundle from ``flmi certs init``.
    address
        ``HOST:PORT`` to listen on (port 0 picks a free one).
    out
        The run directory (created, or continued with ``resume``).
    resume
        Continue the run in ``out`` after its last checkpointed round.
    progress
        Called after each round.
    on_listening
        Called with the bound ``HOST:PORT`` once the server listens.
    """
    d = config.deploy
    _check_deploy_sites(config)
    torch.set_num_threads(config.runtime.torch_threads)
    task = deployment_task(config)
    initial = params_copy(task.build_model(seed=config.federation.seed))
    strategy = make_strategy(config, d.sites)
    secure = build_secure(config.privacy, strategy=strategy.name, site_names=d.sites)
    credentials = server_credentials(certs)
    revoked = RevocationList(path=Path(d.revocation_list) if d.revocation_list else None)
    run, resume_point = open_run(config=config, out=out, resume=resume)
    assert run is not None
    coordinator = Coordinator(sites=d.sites, heartbeat_s=d.heartbeat_s)
    coordinator.completed_round = resume_point.completed_round if resume_point else 0
    service = _federation_service(
        config=config,
        strategy=strategy.name,
        reference=initial,
        coordinator=coordinator,
        audit=AuditLog(path=run.path / AUDIT_LOG),
    )
    server, bound = _start_server(
        config=config, service=service, revoked=revoked, credentials=credentials, address=address
    )
    if on_listening is not None:
        on_listening(bound)

    federate = functools.partial(
        _federate,
        config=config,
        task=task,
        strategy=strategy,
        coordinator=coordinator,
        initial=initial,
        run=run,
        progress=progress,
        resume_point=resume_point,
        secure=secure,
    )
    stopped = _serve_until_done(server=server, coordinator=coordinator, federate=federate)
    return ServerResult(path=out, completed_round=coordinator.completed_round, stopped=stopped)


def _serve_until_done(
    *, server: grpc.Server, coordinator: Coordinator, federate: Callable[[], None]
) -> bool:
    """Run ``federate`` with SIGTERM asking it to stop; whether it was stopped.

    The server stops listening however ``federate`` ends.
    """
    previous = _on_sigterm(coordinator)
    stopped = False
    try:
        federate()
    except StopRequestedError:
        stopped = True
        log.warning("stopped by SIGTERM; resume with --resume")
    except RoundFailedError:
        # The run ends here, loudly: tell the connected sites so they exit instead of waiting.
        coordinator.finish()
        coordinator.wait_until_all_done(DONE_GRACE_S)
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        server.stop(grace=1.0).wait()
    return stopped


def _check_deploy_sites(config: Config) -> None:
    """Refuse a deployment with no sites, or fewer sites than a round needs."""
    d = config.deploy
    if not d.sites:
        raise ConfigError(
            "deploy.sites is empty: list the site names (their certificates' common names) "
            'that may join, e.g. sites = ["hospital_1", "hospital_2"]'
        )
    if config.federation.min_sites > len(d.sites):
        raise ConfigError(
            f"federation.min_sites = {config.federation.min_sites} exceeds the "
            f"{len(d.sites)} sites of deploy.sites"
        )
    refuse_in_deployment(
        insecure_reproducible=config.privacy.insecure_reproducible_noise, command="flmi server"
    )


def _federation_service(
    *,
    config: Config,
    strategy: str,
    reference: Params,
    coordinator: Coordinator,
    audit: AuditLog,
) -> FederationService:
    """The gRPC service that registers sites and relays rounds, with the deploy limits."""
    d = config.deploy
    return FederationService(
        coordinator=coordinator,
        settings=ServiceSettings(
            task=config.task.name,
            strategy=strategy,
            rounds=config.federation.rounds,
            reference=reference,
            plans=site_plans(config),
            chunk_bytes=d.chunk_bytes,
            max_message_bytes=d.max_message_bytes,
            max_payload_bytes=d.max_payload_bytes,
            heartbeat_s=d.heartbeat_s,
            aggregation=AggregationPlan.from_config(config.privacy),
        ),
        audit=audit,
    )


def _start_server(
    *,
    config: Config,
    service: FederationService,
    revoked: RevocationList,
    credentials: grpc.ServerCredentials,
    address: str,
) -> tuple[grpc.Server, str]:
    """Listen on ``address`` over mTLS for the deploy sites; the server and ``HOST:PORT``."""
    d = config.deploy
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4 * len(d.sites) + 8),
        interceptors=[SiteAuthInterceptor(allowed=d.sites, revoked=revoked)],
        options=server_options(max_message_bytes=d.max_message_bytes, heartbeat_s=d.heartbeat_s),
    )
    add_federation_service(service, server)
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise ConfigError(f"--address {address}: cannot listen there (in use, or not this host)")
    host = address.rsplit(":", 1)[0]
    server.start()
    return server, f"{host}:{port}"


def _federate(
    *,
    config: Config,
    task: Task,
    strategy: Strategy[Any],
    coordinator: Coordinator,
    initial: Params,
    run: RunDir,
    progress: Callable[[RoundRecord, int], None] | None,
    resume_point: ResumePoint | None,
    secure: SecureAggregation | None,
) -> None:
    """Wait for enough sites, run every round, record the results, then release the sites."""
    coordinator.wait_for_sites(
        minimum=config.federation.min_sites, timeout_s=config.deploy.wait_for_sites_s
    )
    try:
        result = _run_rounds(
            config=config,
            strategy=strategy,
            coordinator=coordinator,
            initial=initial,
            run=run,
            progress=progress,
            resume_point=resume_point,
            secure=secure,
        )
    except RoundFailedError:
        # The run ends here, loudly: tell the connected sites so they exit instead of waiting.
        coordinator.finish()
        coordinator.wait_until_all_done(DONE_GRACE_S)
        raise
    _write_results(
        config=config, run=run, task=task, strategy=strategy.name, secure=secure, result=result
    )
    coordinator.finish()
    coordinator.wait_until_all_done(DONE_GRACE_S)


def _run_rounds(
    *,
    config: Config,
    strategy: Strategy[Any],
    coordinator: Coordinator,
    initial: Params,
    run: RunDir,
    progress: Callable[[RoundRecord, int], None] | None,
    resume_point: ResumePoint | None,
    secure: SecureAggregation | None,
) -> FederationResult:
    """The shared round loop, with the connected sites as its runtime."""
    f = config.federation
    observer = _Observer(
        run=run,
        strategy=strategy.name,
        coordinator=coordinator,
        progress=progress,
        rounds=f.rounds,
    )
    return run_federation(
        strategy=strategy,
        runtime=GrpcRuntime(coordinator=coordinator, round_timeout_s=config.deploy.round_timeout_s),
        initial_params=initial,
        plan=FederationPlan(
            rounds=f.rounds,
            fraction=f.fraction,
            min_sites=f.min_sites,
            seed=f.seed,
            eval_every=f.eval_every,
            max_failed_rounds=f.max_failed_rounds,
        ),
        observer=observer,
        arm=Arm.FEDERATED,
        resume=resume_point,
        secure=secure,
        recorder=open_recorder(
            enabled=config.record.updates,
            run_dir=run.path,
            strategy=strategy.name,
            sites=config.deploy.sites,
            initial=initial,
            resumed_after=resume_point.completed_round if resume_point else None,
        ),
    )


def _write_results(
    *,
    config: Config,
    run: RunDir,
    task: Task,
    strategy: str,
    secure: SecureAggregation | None,
    result: FederationResult,
) -> None:
    """Write the final model and ``summary.json`` (per-site scores of the last round)."""
    history = list(result.history) or [record_from_line(run.metrics_lines()[-1])]
    run.write_model(params=result.params, meta=model_meta(config, task, strategy))
    last = history[-1]
    run.write_summary(
        Summary(
            arms={
                Arm.FEDERATED: ArmSummary(
                    per_site={s: dict(m) for s, m in sorted(last.per_site.items())},
                    site_mean=dict(last.site_mean),
                )
            },
            rounds=config.federation.rounds,
            seed=config.federation.seed,
            torch_threads=torch.get_num_threads(),
            strategy=strategy,
            runtime="grpc",
            sites=tuple(config.deploy.sites),
            privacy=privacy_summary(config.privacy, secure, history),
            versions=versions(),
        )
    )


def _on_sigterm(coordinator: Coordinator) -> Any:
    """Make SIGTERM stop the round loop at its next wait (checkpoints stay consistent)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        coordinator.stop.set()

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, handler)
