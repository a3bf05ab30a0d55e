"""The audit trail is a hash chain: any changed line before the last breaks it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flmi.cli import main
from flmi.runtime.grpc.audit import GENESIS, AuditError, AuditLog, line_hash, verify_lines


def _write(path: Path, count: int) -> AuditLog:
    log = AuditLog(path=path)
    for i in range(count):
        payload = f"payload {i}".encode()
        log.record(
            rnd=i // 2,
            peer=f"hospital_{i % 2 + 1}",
            message="Reply",
            direction="in",
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
        )
    return log


def test_each_line_holds_the_hash_of_the_line_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == line_hash(lines[0])
    assert entries[2]["prev"] == line_hash(lines[1])
    assert set(entries[0]) == {
        "time",
        "round",
        "peer",
        "message",
        "direction",
        "bytes",
        "sha256",
        "prev",
    }
    assert verify_lines(path).lines == 3


def test_a_tampered_line_is_detected_and_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["bytes"] += 1  # someone edits what was sent
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(AuditError, match="line 3 does not chain to line 2"):
        verify_lines(path)
    assert main(["audit-log", "verify", str(path)]) == 2


def test_a_removed_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")

    with pytest.raises(AuditError, match="line 2"):
        verify_lines(path)


def test_reopening_a_log_continues_its_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    _write(path, 2)  # a restarted server appends to the same log

    assert verify_lines(path).lines == 4
    assert main(["audit-log", "verify", str(path)]) == 0


def test_reopening_a_tampered_log_refuses_to_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    path.write_text(path.read_text().replace('"round":0', '"round":7', 1))

    with pytest.raises(AuditError):
        AuditLog(path=path)
