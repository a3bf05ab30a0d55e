"""A site under secure or homomorphic aggregation: it holds its update back.

:class:`SecureSite` wraps the one site code path (:class:`flmi.site.site.Site`,
or anything that answers as a site). It trains as usual, but instead of
sending its update it keeps it inside the hospital and answers with the
training metrics alone; the update leaves only masked (secure aggregation)
or encrypted (homomorphic aggregation), in the protocol stages the server
relays (:meth:`SecureSite.exchange`). Before masking, the site validates its
own update: finite, and within the quantisation range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError, NonFiniteError
from flmi.core.exchange import StageReply
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
)
from flmi.core.params import Params
from flmi.privacy import secagg
from flmi.privacy.linear import LinearRule, LinearTerms, linear_terms
from flmi.privacy.wire import Payload, ProtocolError
from flmi.runtime.inprocess import SiteEndpoint

if TYPE_CHECKING:
    from flmi.privacy.he import CkksSettings, HEClient
    from flmi.privacy.he_sums import HETrust

log = logging.getLogger("flmi.privacy.site")
HE_STAGE_PREFIX = "he/"


@dataclass(frozen=True)
class _Held:
    """The update a site holds back in one round, and the weights it started from."""

    rnd: int
    update: ClientUpdate
    reference: Params


class SecureSite:
    """A site that sends its update only masked or encrypted.

    Parameters
    ----------
    site
        The site underneath (it trains and evaluates).
    ckks
        CKKS parameters, used when this site is the homomorphic key holder
        (``None``: TenSEAL's defaults of :class:`flmi.privacy.he.CkksSettings`;
        TenSEAL is imported only when a homomorphic stage arrives).
    policy
        The site's own bounds on secure aggregation rounds.
    he_trust
        What the site believes under homomorphic aggregation: its credential,
        the consortium CA, the key holder and the fewest contributions a
        decrypted sum holds (``None``: the site answers no homomorphic stage).
    """

    def __init__(
        self,
        *,
        site: SiteEndpoint,
        ckks: CkksSettings | None = None,
        policy: secagg.SecAggPolicy | None = None,
        he_trust: HETrust | None = None,
    ) -> None:
        self.name = site.name
        self._site = site
        self._policy = policy if policy is not None else secagg.SecAggPolicy()
        self._held: _Held | None = None
        self._secagg: secagg.SecAggClient | None = None
        self._ckks = ckks
        self._he_trust = he_trust
        self._he: HEClient | None = None

    @property
    def has_secret_key(self) -> bool:
        """Whether this site holds the homomorphic secret key."""
        return self._he is not None and self._he.has_secret_key

    def _he_client(self) -> HEClient:
        if self._he is None:
            from flmi.privacy.he import CkksSettings, HEClient

            if self._he_trust is None:
                raise ProtocolError(
                    f"site '{self.name}': homomorphic aggregation needs the site's certificate, "
                    "the consortium CA and privacy.he_key_holder; this site was set up without"
                )
            self._he = HEClient(
                site=self.name, settings=self._ckks or CkksSettings(), trust=self._he_trust
            )
        return self._he

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """Train, hold the update back, and reply with the training metrics alone."""
        reply = self._site.train(instruction)
        self._held, self._secagg = None, None
        if isinstance(reply, ClientError):
            return reply
        self._held = _Held(rnd=instruction.rnd, update=reply, reference=instruction.params)
        return ClientUpdate(
            site=self.name,
            params={},
            kind=reply.kind,
            num_examples=0,
            num_steps=0,
            metrics=reply.metrics,
        )

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        """Evaluation is unchanged: only aggregate metrics leave."""
        return self._site.evaluate(instruction)

    def _error(self, code: ErrorCode, message: str) -> ClientError:
        log.warning("site %s: %s", self.name, message)
        return ClientError(site=self.name, code=code, message=message)

    def exchange(self, *, stage: str, rnd: int, payload: bytes) -> StageReply:
        """Answer one protocol stage; a refusal is a :class:`ClientError`, never an exception."""
        where = f"site '{self.name}': {stage} of round {rnd}"
        try:
            request = Payload.decode(payload, where=where)
            if request.header.get("round") != rnd:
                raise ProtocolError(f"{where}: the message belongs to another round")
            return self._answer(stage, rnd, request).encode()
        except NonFiniteError as exc:
            return self._error(ErrorCode.NON_FINITE_UPDATE, str(exc))
        except _OutOfRangeError as exc:
            return self._error(ErrorCode.UPDATE_OUT_OF_RANGE, str(exc))
        except (ConfigError, ValueError) as exc:
            return self._error(ErrorCode.HPARAM_REFUSED, f"{where}: {exc}")
        except ProtocolError as exc:
            return self._error(ErrorCode.PROTOCOL_ERROR, str(exc))

    def _terms(self, rnd: int, request: Payload, *, where: str) -> LinearTerms:
        if self._held is None or self._held.rnd != rnd:
            raise ProtocolError(f"{where}: this site holds no update of round {rnd}")
        try:
            rule = LinearRule(request.field("rule", str, where=where))
        except ValueError:
            raise ProtocolError(f"{where}: unknown linear rule") from None
        return linear_terms(self._held.update, reference=self._held.reference, rule=rule)

    def _answer(self, stage: str, rnd: int, request: Payload) -> Payload:
        where = f"site '{self.name}': {stage} of round {rnd}"
        if stage == secagg.Stage.ADVERTISE:
            terms = self._terms(rnd, request, where=where)
            fixed = secagg.FixedPoint(
                clip=float(request.field("clip", float, where=where)),
                bits=request.field("bits", int, where=where),
            )
            problem = secagg.out_of_range(terms, fixed)
            if problem is not None:
                raise _OutOfRangeError(f"site '{self.name}' round {rnd}: {problem}")
            self._secagg = secagg.SecAggClient(
                site=self.name, rnd=rnd, terms=terms, request=request, policy=self._policy
            )
            return self._secagg.advertise_reply()
        if stage in (secagg.Stage.SHARE, secagg.Stage.MASKED, secagg.Stage.UNMASK):
            client = self._secagg
            if client is None or self._held is None or self._held.rnd != rnd:
                raise ProtocolError(f"{where}: no secure aggregation round is under way")
            if stage == secagg.Stage.SHARE:
                return client.share(request)
            if stage == secagg.Stage.MASKED:
                return client.masked(request)
            reply = client.unmask(request)
            self._held, self._secagg = None, None  # this round's update is spent
            return reply
        if stage.startswith(HE_STAGE_PREFIX):
            return self._answer_he(stage, rnd, request, where=where)
        raise ProtocolError(f"{where}: unknown stage")

    def _answer_he(self, stage: str, rnd: int, request: Payload, *, where: str) -> Payload:
        from flmi.privacy.he import Stage

        client = self._he_client()
        if stage == Stage.HELLO:
            return client.hello(request, rnd=rnd)
        if stage == Stage.KEYGEN:
            return client.keygen(request, rnd=rnd)
        if stage == Stage.INSTALL:
            return client.install(request, rnd=rnd)
        if stage == Stage.ENCRYPT:
            reply = client.encrypt(self._terms(rnd, request, where=where), rnd=rnd)
            self._held = None  # one ciphertext per round: this round's update is spent
            return reply
        if stage == Stage.REVEAL:
            return client.reveal(request, rnd=rnd)
        if stage == Stage.ATTEST:
            return client.attest(request, rnd=rnd)
        if stage == Stage.DECRYPT:
            return client.decrypt(request, rnd=rnd)
        raise ProtocolError(f"{where}: unknown stage")


class _OutOfRangeError(Exception):
    """An update value lies outside the quantisation range."""
