"""Streaming tensors as frames: one header frame, then raw bytes in chunks of bounded size.

Tensors travel as raw bytes laid out in the order of the header's tensor
specs; nothing is pickled. A receiver preallocates the declared size, refuses
a frame over the chunk limit, and refuses more or fewer bytes than declared.
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


class Digest(Protocol):
    """A running hash (``hashlib.sha256()``) that frame bytes are fed to."""

    def update(self, data: bytes, /) -> None:
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


def data_frames(arrays: Sequence[np.ndarray], *, chunk_bytes: int) -> Iterator[pb.Frame]:
    """The raw bytes of ``arrays``, in order, as frames of at most ``chunk_bytes``."""
    pending = bytearray()
    for array in arrays:
        view = raw_bytes(array)
        start = 0
        if pending:
            take = min(chunk_bytes - len(pending), len(view))
            pending += view[:take]
            start = take
            if len(pending) == chunk_bytes:
                yield pb.Frame(data=bytes(pending))
                pending = bytearray()
        while len(view) - start >= chunk_bytes:
            yield pb.Frame(data=view[start : start + chunk_bytes].tobytes())
            start += chunk_bytes
        pending += view[start:]
    if pending:
        yield pb.Frame(data=bytes(pending))


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
        self._buffer = bytearray(self.total)
        self._filled = 0

    def add(self, data: bytes) -> None:
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
        self._buffer[self._filled : end] = data
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
    frames: Iterable[pb.Frame],
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
        if frame.WhichOneof("kind") != "data":
            raise RefusalError(WireError.BAD_FRAME, "a second header frame in one message")
        assembler.add(frame.data)
        if digest is not None:
            digest.update(frame.data)
    return assembler.tensors()
