"""Sites with fixed updates, dropouts and a recording relay, for protocol tests."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flmi.core.exchange import StageReply
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.privacy.site import SecureSite
from flmi.runtime.inprocess import InProcessRuntime


class FixedSite:
    """A site whose local training adds a fixed change to the weights it gets."""

    def __init__(
        self,
        *,
        name: str,
        delta: Params,
        n: int,
        steps: int = 3,
        extras: Params | None = None,
    ) -> None:
        self.name = name
        self.delta, self.n, self.steps = delta, n, steps
        self.extras = extras or {}

    def train(self, instruction: TrainInstruction) -> TrainReply:
        x = instruction.params
        return ClientUpdate(
            site=self.name,
            params={k: (x[k] + v).astype(x[k].dtype) for k, v in self.delta.items()},
            kind=UpdateKind.FULL,
            num_examples=self.n,
            num_steps=self.steps,
            metrics={"loss": 0.5},
            extras=dict(self.extras),
        )

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        raise AssertionError("protocol tests do not evaluate")


class DropAt:
    """A secure site that stops answering from one stage on, keeping what it would have sent.

    ``late`` holds the reply it would have given at ``stage``: a late submission.
    """

    def __init__(self, *, site: SecureSite, stage: str) -> None:
        self.name = site.name
        self._site, self._stage = site, stage
        self.late: bytes | None = None
        self._gone = False

    def train(self, instruction: TrainInstruction) -> TrainReply:
        self._gone = False
        return self._site.train(instruction)

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        return self._site.evaluate(instruction)

    def exchange(self, *, stage: str, rnd: int, payload: bytes) -> StageReply:
        if stage == self._stage:
            reply = self._site.exchange(stage=stage, rnd=rnd, payload=payload)
            self.late = reply if isinstance(reply, bytes) else None
            self._gone = True
        if self._gone:
            return ClientError(site=self.name, code=ErrorCode.TIMEOUT, message="no answer")
        return self._site.exchange(stage=stage, rnd=rnd, payload=payload)


class Recorder:
    """A relay that keeps every byte the server receives from the sites."""

    def __init__(self, runtime: InProcessRuntime) -> None:
        self._runtime = runtime
        self.received: list[tuple[str, str, bytes]] = []

    def exchange(
        self, *, stage: str, rnd: int, payloads: Mapping[str, bytes]
    ) -> Mapping[str, StageReply]:
        replies = self._runtime.exchange(stage=stage, rnd=rnd, payloads=payloads)
        for site, reply in sorted(replies.items()):
            if isinstance(reply, bytes):
                self.received.append((stage, site, reply))
        return replies


def fixed_sites(
    *, count: int, size: int, seed: int, scale: float = 0.5
) -> tuple[list[FixedSite], Params]:
    """``count`` sites with random changes in ``+-scale`` of a 2-tensor model, and the model."""
    rng = np.random.default_rng(seed)
    reference = {
        "a.weight": rng.normal(size=(size,)).astype(np.float32),
        "b.bias": rng.normal(size=(3, 2)).astype(np.float32),
    }
    sites = [
        FixedSite(
            name=f"site_{i}",
            delta={
                k: rng.uniform(-scale, scale, size=v.shape).astype(np.float32)
                for k, v in reference.items()
            },
            n=int(rng.integers(5, 200)),
            steps=int(rng.integers(1, 9)),
        )
        for i in range(count)
    ]
    return sites, reference


def train_all(runtime: InProcessRuntime, reference: Params, rnd: int) -> Mapping[str, TrainReply]:
    """Every site trains once from ``reference``."""
    instruction = TrainInstruction(rnd=rnd, params=reference, hparams={})
    return runtime.train({name: instruction for name in runtime.site_names()})


def plain_mean(sites: list[FixedSite], reference: Params, names: set[str]) -> Params:
    """The example-weighted mean change of the sites in ``names`` (float64)."""
    chosen = [s for s in sites if s.name in names]
    total = sum(s.n for s in chosen)
    return {
        k: sum(
            s.n * ((reference[k] + s.delta[k]).astype(np.float64) - reference[k]) for s in chosen
        )
        / total
        for k in reference
    }
