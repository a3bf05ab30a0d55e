"""``flmi client``: one hospital's side of a real federation.

The client only ever connects outward: it registers (showing its model schema
and checking the server's training plan against its own bounds), then pulls
instructions, runs them through the same :class:`flmi.site.site.Site` the
simulation uses, and pushes the replies. It reconnects with exponential
backoff when the server is unreachable and registers again after a server
restart, reloading its saved :class:`SiteState` as of the server's last
finished round. Under secure or homomorphic aggregation (the plan says which)
the site holds its update back and answers the protocol's stages, which arrive
as instructions like any other.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import grpc
import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.exchange import StageEndpoint
from flmi.core.messages import ClientError, ErrorCode, EvaluateInstruction, TrainInstruction
from flmi.core.params import Params, schema_hash
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.chunking import WireFrame, collect, data_frames, raw_bytes
from flmi.runtime.grpc.codec import (
    Reply,
    StageMessage,
    audit_label,
    decode_instruction,
    encode_reply,
    hparams_from_wire,
    tensor_specs,
)
from flmi.runtime.grpc.codes import ERROR_CODE_KEY, PROTOCOL_VERSION, WireError
from flmi.runtime.grpc.schema import schema_specs
from flmi.runtime.grpc.secure import (
    CAPABILITY_STAGES,
    AggregationPlan,
    ExitAtStage,
    injected_exit,
    protect,
)
from flmi.runtime.grpc.siteconf import Bounds
from flmi.runtime.grpc.transport import FederationStub
from flmi.runtime.inprocess import SiteEndpoint

if TYPE_CHECKING:
    from flmi.privacy.he_sums import HETrust

log = logging.getLogger("flmi.client")
T = TypeVar("T")
LONG_POLL_S = 2.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ClientExitError(Exception):
    """The client stops: refused, unreachable, or told to stop.

    Parameters
    ----------
    status
        The process exit status (0 finished or stopped, 2 refused, 3 unreachable).
    message
        What happened, for the operator.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Stopped(BaseException):
    """SIGTERM arrived."""


def wire_code(exc: grpc.RpcError) -> str:
    """The flmi error code a refused call carries (empty if none)."""
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == ERROR_CODE_KEY:
            return str(value)
    return ""


@dataclass(frozen=True)
class ClientSettings:
    """How a client talks to its server.

    Parameters
    ----------
    server
        ``HOST:PORT``.
    task
        The task name this site runs.
    schema
        This site's model tensors (their names, shapes and dtypes are checked at register).
    bounds
        What the site agrees to run.
    reconnect_timeout_s
        Give up after the server has been unreachable this long.
    max_message_bytes
        Largest gRPC message sent or received.
    exit_at_stage
        Test-only fault injection (:mod:`flmi.runtime.grpc.secure`); ``None`` in a real run.
    he_trust
        What the site believes under homomorphic aggregation (its certificate,
        the CA, the key holder, ``t``); ``None`` when its config does not ask for it.
    """

    server: str
    task: str
    schema: Params
    bounds: Bounds
    reconnect_timeout_s: float = 300.0
    max_message_bytes: int = 64 << 20
    exit_at_stage: ExitAtStage | None = None
    he_trust: HETrust | None = None


class SiteClient:
    """Runs one site against a server until the run finishes.

    Parameters
    ----------
    settings
        Server address, task, schema, bounds and limits.
    credentials
        The site's mutual-TLS credentials.
    make_site
        Builds the site, its state loaded as of a given round (``None``: the newest).
    audit
        The site's audit log (``None``: none kept).
    """

    def __init__(
        self,
        *,
        settings: ClientSettings,
        credentials: grpc.ChannelCredentials,
        make_site: Callable[[int | None], SiteEndpoint],
        audit: AuditLog | None,
    ) -> None:
        self._s = settings
        self._make_site = make_site
        self._audit = audit
        self._channel = grpc.secure_channel(
            settings.server,
            credentials,
            options=[
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
            ],
        )
        self._stub = FederationStub(self._channel)
        self._site: SiteEndpoint | None = None
        self._chunk_bytes = 1 << 20
        self._heartbeat_s = 5.0
        self._round = 0
        self._stop = threading.Event()
        self.stopped = False
        self._heartbeat_call: grpc.Future | None = None

    def _log(self, message: str, direction: str, size: int, sha: str) -> None:
        if self._audit is not None:
            self._audit.record(
                rnd=self._round,
                peer="server",
                message=message,
                direction=direction,
                size=size,
                sha256=sha,
            )

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``, retrying with exponential backoff while the server is unreachable."""
        first_failure: float | None = None
        delay = 0.2
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:  # type: ignore[attr-defined]
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure > self._s.reconnect_timeout_s:
                    raise ClientExitError(
                        3,
                        f"cannot reach the server at {self._s.server} for "
                        f"{self._s.reconnect_timeout_s:g} s ({what}): "
                        f"{exc.details()}",  # type: ignore[attr-defined]
                    ) from None
                log.info("%s: server unreachable; retrying in %.1f s", what, delay)
                time.sleep(delay)
                delay = min(delay * 2.0, 5.0)

    def register(self) -> None:
        """Handshake; check the server's plan against this site's bounds; build the site."""
        request = pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION,
            task=self._s.task,
            schema_sha256=schema_hash(self._s.schema),
            schema=schema_specs(self._s.schema),
            capabilities=[CAPABILITY_STAGES],
        )
        raw = request.SerializeToString()
        self._log("Register", "out", len(raw), hashlib.sha256(raw).hexdigest())
        try:
            reply = self._retry("register", lambda: self._stub.Register(request, timeout=30.0))
        except grpc.RpcError as exc:
            raise ClientExitError(
                2,
                f"refused at register: {exc.details()}",  # type: ignore[attr-defined]
            ) from None
        out = reply.SerializeToString()
        self._log("RegisterReply", "in", len(out), hashlib.sha256(out).hexdigest())
        plan = reply.plan
        aggregation = AggregationPlan.from_wire(plan)
        refusal = self._s.bounds.check_aggregation(aggregation.aggregation)
        if refusal is None:
            refusal = self._s.bounds.check_plan(
                strategy=plan.strategy, rounds=plan.rounds, hparams=hparams_from_wire(plan.hparams)
            )
        if refusal is not None:
            code, reason = refusal
            self._done(ErrorCode.HPARAM_REFUSED, f"{code.value}: {reason}")
            raise ClientExitError(2, f"this site refuses the training plan: {code.value}: {reason}")
        self._chunk_bytes = int(reply.chunk_bytes)
        self._heartbeat_s = float(reply.heartbeat_s)
        try:
            self._site = protect(
                self._make_site(reply.completed_round), aggregation, he_trust=self._s.he_trust
            )
        except ConfigError as exc:
            self._done(ErrorCode.HPARAM_REFUSED, str(exc))
            raise ClientExitError(2, f"this site refuses the training plan: {exc}") from None
        log.info("registered; the server has finished %d rounds", reply.completed_round)

    def _done(self, code: str = "", message: str = "") -> None:
        request = pb.DoneRequest(code=code, message=message)
        raw = request.SerializeToString()
        self._log("Done", "out", len(raw), hashlib.sha256(raw).hexdigest())
        try:
            self._stub.Done(request, timeout=10.0)
        except grpc.RpcError:
            log.warning("could not tell the server this site is done")

    def _heartbeats(self) -> None:
        """Hold the heartbeat stream open, reopening it after a break, until stopped."""
        while not self._stop.is_set():
            call = self._stub.Heartbeat(pb.HeartbeatRequest())
            self._heartbeat_call = call
            try:
                for _ in call:
                    if self._stop.is_set():
                        break
            except grpc.RpcError as exc:
                log.debug("heartbeat stream ended: %s", exc.code())  # type: ignore[attr-defined]
            finally:
                call.cancel()
            self._stop.wait(self._heartbeat_s)

    def _fetch(self, after: str) -> tuple[pb.Instruction, list[tuple[str, np.ndarray]]]:
        def call() -> tuple[pb.Instruction, list[tuple[str, np.ndarray]]]:
            frames: Iterator[WireFrame] = self._stub.FetchInstruction(
                pb.FetchRequest(after_ticket=after, wait_s=LONG_POLL_S),
                timeout=LONG_POLL_S + 600.0,
            )
            first = next(frames)
            header = first.instruction if isinstance(first, pb.Frame) else pb.Instruction()
            digest = hashlib.sha256()
            tensors = collect(
                frames,
                specs_of=tensor_specs(header),
                chunk_bytes=self._chunk_bytes,
                max_payload_bytes=1 << 40,
                digest=digest if self._audit is not None else None,
            )
            kind = header.WhichOneof("body")
            if kind in ("train", "evaluate", "staged"):
                self._round = getattr(header, kind).round
                raw = header.SerializeToString()
                digest.update(raw)
                self._log(
                    audit_label("Instruction", header),
                    "in",
                    len(raw) + int(header.payload_bytes),
                    digest.hexdigest(),
                )
            return header, tensors

        return self._retry("fetch", call)

    def _answer(self, instruction: TrainInstruction | EvaluateInstruction | StageMessage) -> Reply:
        assert self._site is not None
        if isinstance(instruction, StageMessage):
            return self._answer_stage(instruction)
        refusal = self._s.bounds.check_hparams(instruction.hparams)
        if refusal is not None:
            _, reason = refusal
            log.warning("refused round %d: %s", instruction.rnd, reason)
            return ClientError(site=self._site.name, code=ErrorCode.HPARAM_REFUSED, message=reason)
        if isinstance(instruction, TrainInstruction):
            return self._site.train(instruction)
        return self._site.evaluate(instruction)

    def _answer_stage(self, message: StageMessage) -> Reply:
        """Answer one protocol stage through the site (a :class:`SecureSite`)."""
        assert self._site is not None
        fault = self._s.exit_at_stage
        if fault is not None and fault.hit(message.stage, message.rnd):
            injected_exit(fault)
        if not isinstance(self._site, StageEndpoint):
            return ClientError(
                site=self._site.name,
                code=ErrorCode.UNAVAILABLE,
                message=f"this site's plan has no protocol stages; refused '{message.stage}'",
            )
        answer = self._site.exchange(stage=message.stage, rnd=message.rnd, payload=message.payload)
        if isinstance(answer, ClientError):
            return answer
        return StageMessage(stage=message.stage, rnd=message.rnd, payload=answer)

    def _submit(self, ticket: str, reply: Reply) -> None:
        header, arrays = encode_reply(ticket, reply)
        if self._audit is not None:
            digest = hashlib.sha256()
            for array in arrays:
                digest.update(raw_bytes(array))
            raw = header.SerializeToString()
            digest.update(raw)
            self._log(
                audit_label("Reply", header),
                "out",
                len(raw) + int(header.payload_bytes),
                digest.hexdigest(),
            )

        def frames() -> Iterator[pb.Frame | bytes]:
            yield pb.Frame(reply=header)
            yield from data_frames(arrays, chunk_bytes=self._chunk_bytes)

        try:
            self._retry("submit", lambda: self._stub.SubmitUpdate(frames(), timeout=600.0))
        except grpc.RpcError as exc:
            log.error(
                "the server refused this site's reply: %s",
                exc.details(),  # type: ignore[attr-defined]
            )

    def run(self) -> int:
        """Take part until the server says the run is over; return the exit status."""
        previous = _install_sigterm()
        heartbeat = threading.Thread(target=self._heartbeats, name="flmi-heartbeat")
        try:
            self.register()
            heartbeat.start()
            last = ""
            while True:
                try:
                    header, tensors = self._fetch(last)
                except grpc.RpcError as exc:
                    if wire_code(exc) in (WireError.NOT_REGISTERED, WireError.SHUTTING_DOWN):
                        time.sleep(0.2)
                        self.register()
                        last = ""
                        continue
                    raise ClientExitError(
                        2,
                        f"the server refused this site: {exc.details()}",  # type: ignore[attr-defined]
                    ) from None
                kind = header.WhichOneof("body")
                if kind == "wait":
                    continue
                if kind == "finish":
                    self._done()
                    return 0
                instruction = decode_instruction(header, tensors)
                self._round = instruction.rnd
                self._submit(header.ticket, self._answer(instruction))
                last = header.ticket
                # Free this payload before the next one arrives: one model's bytes at a time.
                del tensors, instruction
        except _Stopped:
            log.warning("stopped by SIGTERM; the saved site state is consistent")
            self.stopped = True
            return 0
        finally:
            self._stop.set()
            if self._heartbeat_call is not None:
                self._heartbeat_call.cancel()
            if heartbeat.is_alive():
                heartbeat.join()
            self._channel.close()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)


def _install_sigterm() -> signal.Handlers | Callable[[int, FrameType | None], object] | int | None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, handler)
