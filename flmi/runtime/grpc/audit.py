"""A tamper-evident audit trail: one JSON line per message, each chained to the previous.

Every line records the time, round, peer, message type, direction, payload
byte size and the payload's SHA-256, plus ``prev``: the SHA-256 of the
previous line's text (64 zeros for the first). Changing, removing or
reordering a line breaks the chain at that line, which :func:`verify` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flmi.core.errors import FlmiError

GENESIS = "0" * 64
FIELDS = ("time", "round", "peer", "message", "direction", "bytes", "sha256", "prev")


class AuditError(FlmiError):
    """An audit log is unreadable or its chain is broken."""


def line_hash(line: str) -> str:
    """The SHA-256 of one line's text (without its newline), as hex."""
    return hashlib.sha256(line.encode()).hexdigest()


class AuditLog:
    """An append-only JSONL audit log, safe to share between threads.

    Parameters
    ----------
    path
        The log file; an existing log is continued (its chain is checked first).
    """

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._prev = verify(path) if path.is_file() else GENESIS

    def record(
        self, *, rnd: int, peer: str, message: str, direction: str, size: int, sha256: str
    ) -> None:
        """Append one line and flush it to disk.

        Parameters
        ----------
        rnd
            The round the message belongs to (0 outside rounds).
        peer
            The other side: a site's certified name, or ``"server"``.
        message
            The message type (``Register``, ``SubmitUpdate``, ...).
        direction
            ``"in"`` (received) or ``"out"`` (sent).
        size
            Payload bytes.
        sha256
            The payload's SHA-256, as hex.
        """
        with self._lock:
            entry = {
                "time": round(time.time(), 6),
                "round": rnd,
                "peer": peer,
                "message": message,
                "direction": direction,
                "bytes": size,
                "sha256": sha256,
                "prev": self._prev,
            }
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._prev = line_hash(line)


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` found: the number of lines and the hash of the last."""

    lines: int
    head: str


def verify_lines(path: Path) -> Verified:
    """Check every line's ``prev`` against the hash of the line before it.

    Raises
    ------
    AuditError
        Naming the first line (counted from 1) whose chain or fields are wrong.
    """
    if not path.is_file():
        raise AuditError(f"no such audit log: {path}")
    prev, count = GENESIS, 0
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith("\n"):
                raise AuditError(f"{path}: line {number} is incomplete (no newline)")
            line = raw[:-1]
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AuditError(f"{path}: line {number} is not JSON") from None
            if not isinstance(entry, dict) or sorted(entry) != sorted(FIELDS):
                raise AuditError(f"{path}: line {number} lacks the fields {', '.join(FIELDS)}")
            if entry["prev"] != prev:
                raise AuditError(
                    f"{path}: line {number} does not chain to line {number - 1}: the log was "
                    "changed at or before this line"
                )
            prev, count = line_hash(line), number
    return Verified(lines=count, head=prev)


def verify(path: Path) -> str:
    """Check the chain of ``path`` and return the hash of its last line."""
    return verify_lines(path).head
