"""Breakpoints: stop a run cleanly after one round, to inspect it and ``--resume`` it."""

from __future__ import annotations

from collections.abc import Callable

from flmi.core.errors import ConfigError
from flmi.core.federation import RoundRecord
from flmi.core.keys import Arm

ProgressFn = Callable[[RoundRecord, int], None]


class BreakpointReached(Exception):  # noqa: N818 (not an error: the run stopped where asked)
    """The run stopped after round ``rnd``, its record and checkpoint written.

    Parameters
    ----------
    rnd
        The last round the run finished.
    """

    def __init__(self, rnd: int) -> None:
        super().__init__(f"stopped after round {rnd}; continue with --resume")
        self.rnd = rnd


def check_breakpoint(rnd: int, *, rounds: int, resumed_after: int) -> None:
    """``--break-after-round`` must name a round this run has yet to finish, before its last."""
    if not resumed_after < rnd < rounds:
        raise ConfigError(
            f"--break-after-round {rnd}: choose a round in {resumed_after + 1}..{rounds - 1} "
            f"(federation.rounds = {rounds}; a run that stops at its last round needs no "
            "breakpoint"
            + (f", and this one resumes after round {resumed_after}" if resumed_after else "")
            + ")"
        )


def breaking_progress(progress: ProgressFn | None, *, after_round: int) -> ProgressFn:
    """``progress``, then a stop once the federated arm's round ``after_round`` is written.

    The round loop calls progress last, after the round's metrics line,
    checkpoint and record are on disk, so a resumed run continues exactly.
    """

    def show(record: RoundRecord, rounds: int) -> None:
        if progress is not None:
            progress(record, rounds)
        if record.arm == Arm.FEDERATED and record.rnd == after_round:
            raise BreakpointReached(after_round)

    return show
