"""Streaming tensors as frames: one header frame, then raw bytes in chunks of bounded size.

Tensors travel as raw bytes laid out in the order of the header's tensor
specs; nothing is pickled. A receiver preallocates the declared size, refuses
a frame over the chunk limit, and refuses more or fewer bytes than declared.

A data frame is the ``Frame`` message with only its ``data`` field set. Its
protobuf encoding is a fixed tag, a varint length and the bytes, so
:func:`data_frames` writes it directly from the tensors' memory (one copy per
frame), and :func:`decode_frame` hands its bytes on as a view of the received
message (no copy); header frames go through protobuf as usual. The bytes on
the wire are exactly protobuf's: any protobuf implementation reads and writes
these frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.codes import RefusalError, WireError

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
# Tensor dtypes that may travel; anything else (objects above all) is refused.
DTYPES = frozenset(
    ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
)


# Frame.data is field 3, length-delimited: tag (3 << 3) | 2.
DATA_TAG = 0x1A
# A received frame: a header (or a data frame in another encoding) as protobuf, or data bytes.
WireFrame = pb.Frame | memoryview


class Digest(Protocol):
    """A running hash (``hashlib.sha256()``) that frame bytes are fed to."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Feed ``data``."""
        ...


def raw_bytes(array: np.ndarray) -> memoryview:
    """The bytes of ``array`` in C order, without a copy when it is contiguous already."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def spec_of(name: str, array: np.ndarray) -> pb.TensorSpec:
    """The wire spec of one tensor (its bytes travel apart)."""
    return pb.TensorSpec(name=name, dtype=str(array.dtype), shape=[int(d) for d in array.shape])


def spec_nbytes(spec: pb.TensorSpec) -> int:
    """Bytes the tensor described by ``spec`` takes, after checking its dtype and shape."""
    if spec.dtype not in DTYPES:
        raise RefusalError(WireError.BAD_FRAME, f"tensor '{spec.name}' has dtype '{spec.dtype}'")
    if any(d < 0 for d in spec.shape):
        raise RefusalError(WireError.BAD_FRAME, f"tensor '{spec.name}' has a negative dimension")
    return int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _data_frame(pieces: list[memoryview], size: int) -> bytes:
    return b"".join([bytes((DATA_TAG,)), _varint(size), *pieces])


def data_frames(arrays: Sequence[np.ndarray], *, chunk_bytes: int) -> Iterator[bytes]:
    """The raw bytes of ``arrays``, in order, as encoded data frames of at most ``chunk_bytes``.

    Each item is the protobuf encoding of ``Frame(data=...)``, written with one
    copy of the tensor bytes; :func:`encode_frame` passes it through unchanged.
    """
    pieces: list[memoryview] = []
    size = 0
    for array in arrays:
        view = raw_bytes(array)
        start = 0
        while start < len(view):
            take = min(chunk_bytes - size, len(view) - start)
            pieces.append(view[start : start + take])
            size += take
            start += take
            if size == chunk_bytes:
                yield _data_frame(pieces, size)
                pieces, size = [], 0
    if size:
        yield _data_frame(pieces, size)


def encode_frame(frame: pb.Frame | bytes) -> bytes:
    """Serialise one streamed frame: a ``Frame`` message, or a data frame already encoded."""
    if isinstance(frame, bytes):
        return frame
    return bytes(frame.SerializeToString())


def decode_frame(raw: bytes) -> WireFrame:
    """Parse one streamed frame: a data frame's bytes as a view of ``raw``, else a ``Frame``."""
    if raw[:1] == bytes((DATA_TAG,)):
        length, shift, position = 0, 0, 1
        while position < len(raw) and position <= 10:
            byte = raw[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if position + length == len(raw):
                    return memoryview(raw)[position:]
                break
    frame: pb.Frame = pb.Frame.FromString(raw)
    return frame


class Assembler:
    """Collects the data frames that follow a header into the tensors it declares.

    Parameters
    ----------
    specs
        The header's tensor specs, in wire order.
    chunk_bytes
        Largest data frame accepted.
    max_payload_bytes
        Largest total payload accepted.
    """

    def __init__(
        self, *, specs: Sequence[pb.TensorSpec], chunk_bytes: int, max_payload_bytes: int
    ) -> None:
        self._specs = list(specs)
        sizes = [spec_nbytes(s) for s in self._specs]
        names = [s.name for s in self._specs]
        if len(set(names)) != len(names):
            raise RefusalError(WireError.BAD_FRAME, "a tensor name appears twice")
        self.total = sum(sizes)
        if self.total > max_payload_bytes:
            raise RefusalError(
                WireError.MESSAGE_TOO_LARGE,
                f"payload of {self.total} bytes exceeds the limit of {max_payload_bytes}",
            )
        self._sizes = sizes
        self._chunk_bytes = chunk_bytes
        # numpy's buffer, not a bytearray: no zero-filling pass, and numpy asks the
        # kernel for huge pages, so filling it takes a third of the page faults' time.
        self._buffer = np.empty(self.total, dtype=np.uint8)
        self._view = self._buffer.data
        self._filled = 0

    def add(self, data: bytes | memoryview) -> None:
        """Append one data frame's bytes."""
        if len(data) > self._chunk_bytes:
            raise RefusalError(
                WireError.MESSAGE_TOO_LARGE,
                f"a data frame of {len(data)} bytes exceeds the chunk limit of {self._chunk_bytes}",
            )
        end = self._filled + len(data)
        if end > self.total:
            raise RefusalError(
                WireError.BAD_FRAME, f"more bytes than the {self.total} the header declared"
            )
        self._view[self._filled : end] = data
        self._filled = end

    def tensors(self) -> list[tuple[str, np.ndarray]]:
        """The declared tensors, once every byte has arrived."""
        if self._filled != self.total:
            raise RefusalError(
                WireError.BAD_FRAME,
                f"received {self._filled} of the {self.total} bytes the header declared",
            )
        out: list[tuple[str, np.ndarray]] = []
        offset = 0
        for spec, size in zip(self._specs, self._sizes, strict=True):
            dtype = np.dtype(spec.dtype)
            array = np.frombuffer(
                self._buffer, dtype=dtype, count=size // dtype.itemsize, offset=offset
            ).reshape(tuple(spec.shape))
            out.append((spec.name, array))
            offset += size
        return out


def collect(
    frames: Iterable[WireFrame],
    *,
    specs_of: Sequence[pb.TensorSpec],
    chunk_bytes: int,
    max_payload_bytes: int,
    digest: Digest | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Read every remaining data frame of a stream into the tensors ``specs_of`` declares."""
    assembler = Assembler(
        specs=specs_of, chunk_bytes=chunk_bytes, max_payload_bytes=max_payload_bytes
    )
    for frame in frames:
        if isinstance(frame, memoryview):
            data: bytes | memoryview = frame
        elif frame.WhichOneof("kind") == "data":
            data = frame.data
        else:
            raise RefusalError(WireError.BAD_FRAME, "a second header frame in one message")
        assembler.add(data)
        if digest is not None:
            digest.update(data)
    return assembler.tensors()
