"""The payload format of protocol stages: a JSON header and named binary blobs.

Nothing is pickled: a payload is ``len(header)`` (4 bytes, big-endian), the
UTF-8 JSON header, then the blobs back to back in the order the header lists
them. Every length is checked on reading; a malformed payload is a
:class:`ProtocolError`, never a crash and never code execution.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flmi.core.errors import FlmiError

_LENGTH = struct.Struct(">I")
#: Largest header accepted (the header holds names and small numbers, never tensors).
MAX_HEADER_BYTES = 16 * 1024 * 1024


class ProtocolError(FlmiError):
    """A protocol message is malformed, of another round, or breaks the protocol's rules."""


@dataclass(frozen=True)
class Payload:
    """One stage message: a JSON-ready header and named binary blobs."""

    header: Mapping[str, Any]
    blobs: Mapping[str, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The bytes that travel."""
        names = sorted(self.blobs)
        head = dict(self.header)
        if "blobs" in head:
            raise ProtocolError("'blobs' is reserved in a payload header")
        head["blobs"] = [[name, len(self.blobs[name])] for name in names]
        text = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
        return b"".join([_LENGTH.pack(len(text)), text, *(bytes(self.blobs[n]) for n in names)])

    @staticmethod
    def decode(data: bytes, *, where: str) -> Payload:
        """Read bytes written by :meth:`encode`.

        Parameters
        ----------
        data
            The received bytes.
        where
            Who sent them and in which stage, for the error message.

        Raises
        ------
        ProtocolError
            Truncated, oversized or inconsistent data.
        """
        if len(data) < _LENGTH.size:
            raise ProtocolError(f"{where}: payload of {len(data)} bytes is truncated")
        (size,) = _LENGTH.unpack_from(data)
        if size > MAX_HEADER_BYTES or _LENGTH.size + size > len(data):
            raise ProtocolError(f"{where}: payload header of {size} bytes does not fit")
        try:
            head = json.loads(data[_LENGTH.size : _LENGTH.size + size].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"{where}: payload header is not JSON ({exc})") from None
        if not isinstance(head, dict) or not isinstance(head.get("blobs"), list):
            raise ProtocolError(f"{where}: payload header lists no blobs")
        offset = _LENGTH.size + size
        blobs: dict[str, bytes] = {}
        for entry in head.pop("blobs"):
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or not isinstance(entry[1], int)
                or entry[1] < 0
                or entry[0] in blobs
            ):
                raise ProtocolError(f"{where}: bad blob entry {entry!r} in the payload header")
            name, length = entry
            if offset + length > len(data):
                raise ProtocolError(f"{where}: blob '{name}' runs past the end of the payload")
            blobs[name] = data[offset : offset + length]
            offset += length
        if offset != len(data):
            raise ProtocolError(f"{where}: {len(data) - offset} stray bytes after the blobs")
        return Payload(header=head, blobs=blobs)

    def field(self, key: str, kind: type, *, where: str) -> Any:
        """The header value ``key``, which must be of type ``kind``."""
        value = self.header.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{where}: header field '{key}' is missing or not {kind.__name__}")
        return value

    def names(self, key: str, *, where: str) -> list[str]:
        """The header value ``key`` as a list of site names."""
        value = self.field(key, list, where=where)
        if not all(isinstance(v, str) for v in value) or len(set(value)) != len(value):
            raise ProtocolError(f"{where}: header field '{key}' is not a list of distinct names")
        return list(value)

    def blob(self, name: str, *, where: str, size: int | None = None) -> bytes:
        """The blob ``name`` (of exactly ``size`` bytes when given)."""
        value = self.blobs.get(name)
        if value is None:
            raise ProtocolError(f"{where}: blob '{name}' is missing")
        if size is not None and len(value) != size:
            raise ProtocolError(f"{where}: blob '{name}' has {len(value)} bytes, expected {size}")
        return value
