"""The server's side of the gRPC runtime: a :class:`Runtime` that posts instructions and waits.

:class:`GrpcRuntime` is what :func:`flmi.core.federation.run_federation`
drives, exactly as it drives the in-process runtime. Instead of calling a
site, it posts each site's instruction, waits for the site to pull it and push
its reply (the service threads fill these in), and returns every reply when
all have come in, or when the round's deadline passes. A site whose session
breaks (its heartbeat stream ends: process killed, link lost) or that misses
the deadline is left out of the round with a logged :class:`ClientError`.

It is also a :class:`flmi.core.exchange.StagedExchange`: a protocol stage
(secure or homomorphic aggregation) is posted like an instruction, one opaque
payload per site, and each site's answer comes back the same way, under the
same deadline. A site that drops out of a stage answers with an error, and
its late answer finds its ticket closed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from flmi.core.exchange import StageReply
from flmi.core.messages import (
    ClientError,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    EvaluateResult,
    TrainInstruction,
    TrainReply,
)
from flmi.core.params import Params
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.chunking import raw_bytes
from flmi.runtime.grpc.codec import (
    Reply,
    StageMessage,
    encode_evaluate,
    encode_stage,
    encode_train,
)

log = logging.getLogger("flmi.server")


class StopRequestedError(Exception):
    """The server was asked to stop (SIGTERM) while a round was waiting."""


@dataclass
class Posted:
    """One instruction waiting for one site."""

    ticket: str
    rnd: int
    header: pb.Instruction
    arrays: list[np.ndarray]
    data_digest: hashlib._Hash
    reference: Params | None
    reply: Reply | None = None


@dataclass
class StagedBox:
    """Messages waiting for their recipient, by (stage, round, recipient)."""

    boxes: dict[tuple[str, int, str], list[pb.StagedMessage]] = field(default_factory=dict)


class Coordinator:
    """State shared by the service threads and the round loop, under one lock.

    Parameters
    ----------
    sites
        The allow-listed sites.
    heartbeat_s
        The interval clients send heartbeats at.
    """

    def __init__(self, *, sites: Sequence[str], heartbeat_s: float) -> None:
        self.sites = tuple(sorted(sites))
        self.heartbeat_s = heartbeat_s
        self.cond = threading.Condition()
        self.session = secrets.token_hex(4)  # tickets never repeat across server restarts
        self.last_seen: dict[str, float] = {}
        self.sessions: dict[str, object] = {}
        self.refused: dict[str, ClientError] = {}
        self.done: set[str] = set()
        self.posted: dict[str, Posted] = {}
        self.staged = StagedBox()
        self.completed_round = 0
        self.round = 0
        self.finished = False
        self.stop = threading.Event()

    def touch(self, site: str) -> None:
        """Note that ``site`` is alive (call with the lock held)."""
        if site in self.last_seen:
            self.last_seen[site] = time.monotonic()

    def register(self, site: str) -> None:
        """Admit ``site`` to the coming rounds."""
        with self.cond:
            self.last_seen[site] = time.monotonic()
            self.refused.pop(site, None)
            self.done.discard(site)
            self.cond.notify_all()

    def drop(self, site: str, session: object) -> None:
        """``site``'s heartbeat stream ``session`` ended: leave it out until it registers again."""
        with self.cond:
            if self.sessions.get(site) is not session:
                return
            del self.sessions[site]
            if site in self.last_seen and not self.finished:
                log.warning("site %s lost its connection", site)
                self.last_seen.pop(site, None)
            self.cond.notify_all()

    def leave(self, site: str, error: ClientError | None) -> None:
        """``site`` leaves: finished, or refusing the plan with ``error``."""
        with self.cond:
            self.last_seen.pop(site, None)
            if error is None:
                self.done.add(site)
            else:
                self.refused[site] = error
                posted = self.posted.get(site)
                if posted is not None and posted.reply is None:
                    posted.reply = error
            self.cond.notify_all()

    def registered(self) -> list[str]:
        """Sites registered now."""
        with self.cond:
            return sorted(self.last_seen)

    def wait_for_sites(self, *, minimum: int, timeout_s: float) -> list[str]:
        """Wait until every site registered, or ``timeout_s`` passed with ``minimum`` of them."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                if self.stop.is_set():
                    raise StopRequestedError
                present = sorted(self.last_seen)
                if len(present) == len(self.sites):
                    return present
                if time.monotonic() >= deadline and len(present) >= minimum:
                    return present
                self.cond.wait(timeout=0.2)

    def finish(self) -> None:
        """The run is over: every later fetch gets a ``Finish``."""
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    def wait_until_all_done(self, timeout_s: float) -> None:
        """Give connected sites ``timeout_s`` to say they are done."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.last_seen and time.monotonic() < deadline:
                self.cond.wait(timeout=0.1)


def _digest(arrays: Sequence[np.ndarray]) -> hashlib._Hash:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(raw_bytes(array))
    return digest


class GrpcRuntime:
    """The :class:`flmi.core.federation.Runtime` of a real deployment.

    Parameters
    ----------
    coordinator
        The state the service threads share.
    round_timeout_s
        The deadline of each exchange (training, then each evaluation).
    audit_digests
        Hash every payload sent (for the audit log).
    """

    def __init__(
        self, *, coordinator: Coordinator, round_timeout_s: float, audit_digests: bool = True
    ) -> None:
        self._c = coordinator
        self._timeout_s = round_timeout_s
        self._audit_digests = audit_digests
        self._count = 0

    def site_names(self) -> Sequence[str]:
        """Every allow-listed site, sorted (absent ones answer with an error)."""
        return self._c.sites

    def train(self, instructions: Mapping[str, TrainInstruction]) -> Mapping[str, TrainReply]:
        """Post each training instruction and wait for the updates."""
        if not instructions:
            return {}
        rnd = next(iter(instructions.values())).rnd
        encoded = {
            site: encode_train(self._ticket(rnd, "train"), i) for site, i in instructions.items()
        }
        references = {site: dict(i.params) for site, i in instructions.items()}
        replies = self._exchange(rnd, encoded, references)
        out: dict[str, TrainReply] = {}
        for site, reply in replies.items():
            if isinstance(reply, EvaluateResult | StageMessage):
                reply = ClientError(
                    site=site,
                    code=ErrorCode.REJECTED_BY_SERVER,
                    message="answered a training instruction with something else",
                )
            out[site] = reply
        return out

    def evaluate(
        self, instructions: Mapping[str, EvaluateInstruction]
    ) -> Mapping[str, EvaluateReply]:
        """Post each evaluation request and wait for the scores."""
        if not instructions:
            return {}
        first = next(iter(instructions.values()))
        ticket = self._ticket(first.rnd, f"evaluate-{first.split}")
        encoded = {site: encode_evaluate(ticket, i) for site, i in instructions.items()}
        replies = self._exchange(first.rnd, encoded, {})
        out: dict[str, EvaluateReply] = {}
        for site, reply in replies.items():
            if not isinstance(reply, EvaluateResult | ClientError):
                reply = ClientError(
                    site=site, code=ErrorCode.REJECTED_BY_SERVER, message="answered with an update"
                )
            out[site] = reply
        return out

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        """Post one protocol stage to each named site and wait for their answers.

        The payloads are opaque here: the protocol's server side reads the
        answers. A site that is not connected, drops out or misses the
        deadline (``deploy.round_timeout_s``, per stage) answers with a
        :class:`ClientError`, as does one that answers another stage or round.
        """
        if not payloads:
            return {}
        ticket = self._ticket(rnd, f"stage-{stage}")
        encoded = {
            site: encode_stage(ticket, StageMessage(stage=stage, rnd=rnd, payload=bytes(payload)))
            for site, payload in payloads.items()
        }
        replies = self._exchange(rnd, encoded, {})
        out: dict[str, StageReply] = {}
        for site, reply in sorted(replies.items()):
            if isinstance(reply, StageMessage) and reply.stage == stage and reply.rnd == rnd:
                out[site] = reply.payload
            elif isinstance(reply, ClientError):
                out[site] = reply
            else:
                out[site] = ClientError(
                    site=site,
                    code=ErrorCode.PROTOCOL_ERROR,
                    message=f"did not answer stage '{stage}' of round {rnd}",
                )
                log.warning("round %d: site %s did not answer stage %s", rnd, site, stage)
        return out

    def _ticket(self, rnd: int, what: str) -> str:
        self._count += 1
        return f"{self._c.session}-{self._count}-r{rnd}-{what}"

    def _exchange(
        self,
        rnd: int,
        encoded: Mapping[str, tuple[pb.Instruction, list[np.ndarray]]],
        references: Mapping[str, Params],
    ) -> dict[str, Reply]:
        c = self._c
        digests: dict[tuple[int, ...], hashlib._Hash] = {}
        replies: dict[str, Reply] = {}
        with c.cond:
            c.round = rnd
            for site, (header, arrays) in sorted(encoded.items()):
                if site in c.refused:
                    replies[site] = c.refused[site]
                    continue
                if site not in c.last_seen:
                    replies[site] = ClientError(
                        site=site, code=ErrorCode.UNAVAILABLE, message="not connected"
                    )
                    log.warning("round %d: site %s is not connected; left out", rnd, site)
                    continue
                key = tuple(id(a) for a in arrays)
                if key not in digests:
                    digests[key] = _digest(arrays) if self._audit_digests else hashlib.sha256()
                c.posted[site] = Posted(
                    ticket=header.ticket,
                    rnd=rnd,
                    header=header,
                    arrays=arrays,
                    data_digest=digests[key],
                    reference=references.get(site),
                )
            c.cond.notify_all()
            deadline = time.monotonic() + self._timeout_s
            waiting = [s for s in encoded if s not in replies]
            try:
                while waiting:
                    if c.stop.is_set():
                        raise StopRequestedError
                    now = time.monotonic()
                    for site in list(waiting):
                        posted = c.posted[site]
                        if posted.reply is not None:
                            replies[site] = posted.reply
                            waiting.remove(site)
                        elif site not in c.last_seen:
                            replies[site] = ClientError(
                                site=site, code=ErrorCode.UNAVAILABLE, message="connection lost"
                            )
                            log.warning(
                                "round %d: site %s dropped out; left out of this round", rnd, site
                            )
                            waiting.remove(site)
                        elif now >= deadline:
                            replies[site] = ClientError(
                                site=site,
                                code=ErrorCode.TIMEOUT,
                                message=f"no reply within deploy.round_timeout_s = "
                                f"{self._timeout_s:g} s",
                            )
                            log.warning(
                                "round %d: site %s missed the deadline; left out of this round",
                                rnd,
                                site,
                            )
                            waiting.remove(site)
                    if waiting:
                        c.cond.wait(timeout=0.1)
            finally:
                for site in encoded:
                    c.posted.pop(site, None)
        return replies
