"""The gRPC service: handshake, instruction pull, update push, heartbeat, done, staged relay.

Every method learns the caller's site from its certificate (the interceptor
has already refused unknown and revoked sites). A malformed, oversized or
invalid message is refused with a wire error code, logged, and recorded as
that site's failed reply; the server keeps serving the others.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from flmi.core.errors import FlmiError
from flmi.core.messages import ClientError, ClientUpdate, ErrorCode, HParamValue
from flmi.core.params import Params, check_finite, schema_hash
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc import flmi_pb2_grpc as pb_grpc
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.chunking import WireFrame, collect, data_frames
from flmi.runtime.grpc.codec import audit_label, decode_reply, hparams_to_wire, tensor_specs
from flmi.runtime.grpc.codes import PROTOCOL_VERSION, RefusalError, WireError
from flmi.runtime.grpc.coordinator import Coordinator
from flmi.runtime.grpc.interceptor import abort, peer_identity
from flmi.runtime.grpc.schema import compressed_update, first_difference
from flmi.runtime.grpc.secure import CAPABILITY_STAGES, AggregationPlan

log = logging.getLogger("flmi.server")
LONG_POLL_MAX_S = 30.0
WIRE_TO_ERROR = {
    WireError.SCHEMA_MISMATCH: ErrorCode.SCHEMA_MISMATCH,
    WireError.NON_FINITE_UPDATE: ErrorCode.NON_FINITE_UPDATE,
}


@dataclass(frozen=True)
class ServiceSettings:
    """What the service enforces and tells each site at register.

    Parameters
    ----------
    task
        The task name a site must run.
    strategy
        The strategy name (part of the plan the site checks).
    rounds
        Rounds in the run.
    reference
        The model's float tensors (their schema is what a site must match).
    plans
        Each site's local-training hyperparameters for the plan.
    chunk_bytes, max_message_bytes, max_payload_bytes
        Frame, message and payload limits.
    heartbeat_s
        The interval sites send heartbeats at.
    aggregation
        How updates must leave the sites; under ``secagg`` or ``he`` a site
        that does not answer protocol stages is refused at register.
    """

    task: str
    strategy: str
    rounds: int
    reference: Params
    plans: Mapping[str, Mapping[str, HParamValue]]
    chunk_bytes: int
    max_message_bytes: int
    max_payload_bytes: int
    heartbeat_s: float
    aggregation: AggregationPlan = field(default_factory=AggregationPlan)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FederationService(pb_grpc.FederationServicer):  # type: ignore[misc]
    """The server's answers to sites.

    Parameters
    ----------
    coordinator
        State shared with the round loop.
    settings
        Limits and the plan.
    audit
        The server's audit log (``None``: none kept).
    """

    def __init__(
        self, *, coordinator: Coordinator, settings: ServiceSettings, audit: AuditLog | None
    ) -> None:
        self._c = coordinator
        self._s = settings
        self._audit = audit
        self._schema_sha = schema_hash(settings.reference)

    def _site(self, context: grpc.ServicerContext) -> str:
        name, _ = peer_identity(context)
        if name is None:  # the interceptor has refused this already
            abort(context, grpc.StatusCode.UNAUTHENTICATED, WireError.NO_IDENTITY, "no certificate")
        return str(name)

    def _log(self, *, site: str, message: str, direction: str, size: int, sha: str) -> None:
        if self._audit is not None:
            self._audit.record(
                rnd=self._c.round,
                peer=site,
                message=message,
                direction=direction,
                size=size,
                sha256=sha,
            )

    def Register(
        self, request: pb.RegisterRequest, context: grpc.ServicerContext
    ) -> pb.RegisterReply:
        """Check protocol, task and model schema; admit the site and send it the plan."""
        site = self._site(context)
        raw = request.SerializeToString()
        self._log(site=site, message="Register", direction="in", size=len(raw), sha=_sha(raw))
        if request.protocol_version != PROTOCOL_VERSION:
            self._refuse(
                context,
                site,
                WireError.PROTOCOL_VERSION,
                f"protocol version {request.protocol_version}; this server speaks "
                f"{PROTOCOL_VERSION}",
            )
        if request.task != self._s.task:
            self._refuse(
                context,
                site,
                WireError.TASK_MISMATCH,
                f"task '{request.task}'; this federation runs '{self._s.task}'",
            )
        difference = first_difference(self._s.reference, request.schema)
        if difference is not None or request.schema_sha256 != self._schema_sha:
            self._refuse(
                context,
                site,
                WireError.SCHEMA_MISMATCH,
                difference or "the schema hash differs from the tensors sent",
            )
        if self._s.aggregation.needs_stages and CAPABILITY_STAGES not in request.capabilities:
            self._refuse(
                context,
                site,
                WireError.STAGES_UNSUPPORTED,
                f"this federation runs privacy.aggregation = '{self._s.aggregation.aggregation}', "
                "and this client cannot answer its protocol stages; upgrade flmi at the site",
            )
        self._c.register(site)
        log.info("site %s registered", site)
        plan = pb.TrainingPlan(
            task=self._s.task,
            strategy=self._s.strategy,
            rounds=self._s.rounds,
            aggregation=self._s.aggregation.to_wire(),
        )
        hparams_to_wire(plan.hparams, self._s.plans.get(site, {}))
        reply = pb.RegisterReply(
            plan=plan,
            completed_round=self._c.completed_round,
            chunk_bytes=self._s.chunk_bytes,
            max_message_bytes=self._s.max_message_bytes,
            heartbeat_s=self._s.heartbeat_s,
        )
        out = reply.SerializeToString()
        self._log(site=site, message="RegisterReply", direction="out", size=len(out), sha=_sha(out))
        return reply

    def _refuse(self, context: grpc.ServicerContext, site: str, code: WireError, text: str) -> None:
        log.warning("refused %s: %s (%s)", site, code.value, text)
        abort(context, grpc.StatusCode.FAILED_PRECONDITION, code, text)

    def FetchInstruction(
        self, request: pb.FetchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Frame | bytes]:
        """Long poll: stream the site's next instruction, or tell it to wait or finish."""
        site = self._site(context)
        c = self._c
        wait_s = min(max(request.wait_s, 0.0), LONG_POLL_MAX_S)
        deadline = time.monotonic() + wait_s
        finish = pb.Frame(instruction=pb.Instruction(finish=pb.Finish(reason="done")))
        posted = None
        answer: pb.Frame | None = None
        with c.cond:
            while True:
                if site not in c.last_seen and not c.finished:
                    abort(
                        context,
                        grpc.StatusCode.FAILED_PRECONDITION,
                        WireError.NOT_REGISTERED,
                        "register first",
                    )
                c.touch(site)
                candidate = c.posted.get(site)
                if (
                    candidate is not None
                    and candidate.reply is None
                    and candidate.ticket != request.after_ticket
                ):
                    posted = candidate
                    break
                if c.finished:
                    answer = finish
                    break
                if c.stop.is_set():
                    abort(
                        context,
                        grpc.StatusCode.UNAVAILABLE,
                        WireError.SHUTTING_DOWN,
                        "the server is stopping",
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    answer = pb.Frame(instruction=pb.Instruction(wait=pb.Wait(retry_after_s=0.0)))
                    break
                c.cond.wait(timeout=min(remaining, 0.5))
        if posted is None:
            if answer is not None:
                yield answer
            return
        header = posted.header.SerializeToString()
        digest = posted.data_digest.copy()
        digest.update(header)
        self._log(
            site=site,
            message=audit_label("Instruction", posted.header),
            direction="out",
            size=len(header) + int(posted.header.payload_bytes),
            sha=digest.hexdigest(),
        )
        yield pb.Frame(instruction=posted.header)
        yield from data_frames(posted.arrays, chunk_bytes=self._s.chunk_bytes)

    def SubmitUpdate(
        self, request_iterator: Iterator[WireFrame], context: grpc.ServicerContext
    ) -> pb.SubmitReply:
        """Receive a site's reply to its current instruction, checking every limit."""
        site = self._site(context)
        c = self._c
        first = next(request_iterator, None)
        if first is None or isinstance(first, memoryview) or first.WhichOneof("kind") != "reply":
            self._reject(
                context,
                site,
                None,
                RefusalError(WireError.BAD_FRAME, "the first frame must be the reply header"),
            )
            raise AssertionError("unreachable")
        header = first.reply
        with c.cond:
            c.touch(site)
            posted = c.posted.get(site)
            if posted is None or posted.ticket != header.ticket or posted.reply is not None:
                log.warning(
                    "site %s sent a reply to ticket %s, which is not open", site, header.ticket
                )
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    WireError.STALE_TICKET,
                    "this instruction is no longer open",
                )
        digest = hashlib.sha256()
        try:
            specs = tensor_specs(header)
            if (
                posted.reference is not None
                and header.WhichOneof("body") == "update"
                and not compressed_update(header.update.params)
            ):
                difference = first_difference(
                    posted.reference, header.update.params, allow_missing=True
                )
                if difference is not None:
                    raise RefusalError(WireError.SCHEMA_MISMATCH, difference)
            tensors = collect(
                request_iterator,
                specs_of=specs,
                chunk_bytes=self._s.chunk_bytes,
                max_payload_bytes=self._s.max_payload_bytes,
                digest=digest if self._audit is not None else None,
            )
            reply = decode_reply(site, header, tensors)
            if isinstance(reply, ClientUpdate):
                try:
                    check_finite(reply.params, where=f"update from site '{site}'")
                    check_finite(reply.extras, where=f"extras from site '{site}'")
                except FlmiError as exc:
                    raise RefusalError(WireError.NON_FINITE_UPDATE, str(exc)) from None
        except RefusalError as refusal:
            self._reject(context, site, posted.ticket, refusal)
            raise AssertionError("unreachable") from None
        raw = header.SerializeToString()
        digest.update(raw)
        self._log(
            site=site,
            message=audit_label("Reply", header),
            direction="in",
            size=len(raw) + sum(int(np.asarray(a).nbytes) for _, a in tensors),
            sha=digest.hexdigest(),
        )
        with c.cond:
            current = c.posted.get(site)
            if current is not None and current.ticket == header.ticket and current.reply is None:
                current.reply = reply
                c.cond.notify_all()
        return pb.SubmitReply(ticket=header.ticket)

    def _reject(
        self, context: grpc.ServicerContext, site: str, ticket: str | None, refusal: RefusalError
    ) -> None:
        """Log the refusal, record it as the site's reply, and send the code back."""
        log.warning("refused a message from site %s: %s", site, refusal)
        error = ClientError(
            site=site,
            code=WIRE_TO_ERROR.get(refusal.code, ErrorCode.REJECTED_BY_SERVER),
            message=str(refusal),
        )
        with self._c.cond:
            posted = self._c.posted.get(site)
            if posted is not None and posted.ticket == ticket and posted.reply is None:
                posted.reply = error
                self._c.cond.notify_all()
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, refusal.code, refusal.message)

    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.HeartbeatReply]:
        """Hold the site's session open; when it breaks, the site is left out at once."""
        site = self._site(context)
        c = self._c
        session = object()
        with c.cond:
            if site not in c.last_seen:
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    WireError.NOT_REGISTERED,
                    "register first",
                )
            c.sessions[site] = session

        def ended() -> None:
            c.drop(site, session)

        context.add_callback(ended)
        while context.is_active():
            with c.cond:
                if c.sessions.get(site) is not session or c.finished or c.stop.is_set():
                    return
                c.touch(site)
                rnd = c.round
            yield pb.HeartbeatReply(round=rnd)
            c.stop.wait(self._s.heartbeat_s)

    def Done(self, request: pb.DoneRequest, context: grpc.ServicerContext) -> pb.DoneReply:
        """The site leaves; with a code, it refused the plan and is left out of every round."""
        site = self._site(context)
        raw = request.SerializeToString()
        self._log(site=site, message="Done", direction="in", size=len(raw), sha=_sha(raw))
        error = None
        if request.code:
            try:
                code = ErrorCode(request.code)
            except ValueError:
                code = ErrorCode.HPARAM_REFUSED
            error = ClientError(site=site, code=code, message=request.message[:500])
            log.warning("site %s refused the plan: %s (%s)", site, code.value, error.message)
        self._c.leave(site, error)
        return pb.DoneReply()

    def StagedExchange(
        self, request: pb.StagedRequest, context: grpc.ServicerContext
    ) -> pb.StagedReply:
        """Relay opaque messages between sites by stage and round; return the caller's."""
        site = self._site(context)
        raw = request.SerializeToString()
        self._log(
            site=site,
            message=f"StagedExchange:{request.stage}",
            direction="in",
            size=len(raw),
            sha=_sha(raw),
        )
        c = self._c
        with c.cond:
            if site not in c.last_seen:
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    WireError.NOT_REGISTERED,
                    "register first",
                )
            c.touch(site)
            for message in request.outgoing:
                if message.recipient and message.recipient not in c.sites:
                    abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        WireError.BAD_FRAME,
                        f"no site named '{message.recipient}'",
                    )
                recipients = (
                    [message.recipient] if message.recipient else [s for s in c.sites if s != site]
                )
                for recipient in recipients:
                    relayed = pb.StagedMessage()
                    relayed.CopyFrom(message)
                    relayed.sender = site  # from the certificate, never from the caller
                    relayed.recipient = recipient
                    key = (message.stage, message.round, recipient)
                    c.staged.boxes.setdefault(key, []).append(relayed)
            incoming = c.staged.boxes.pop((request.stage, request.round, site), [])
        reply = pb.StagedReply(incoming=incoming)
        out = reply.SerializeToString()
        self._log(
            site=site,
            message=f"StagedReply:{request.stage}",
            direction="out",
            size=len(out),
            sha=_sha(out),
        )
        return reply
