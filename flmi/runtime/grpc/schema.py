"""Comparing a model schema sent over the wire with the server's own, tensor by tensor."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from flmi.core.keys import Extra
from flmi.core.params import schema_of
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.chunking import spec_of


def schema_specs(params: Mapping[str, np.ndarray]) -> list[pb.TensorSpec]:
    """The wire specs of ``params``, in name order."""
    return [spec_of(name, params[name]) for name in sorted(params)]


def first_difference(
    reference: Mapping[str, np.ndarray],
    specs: Iterable[pb.TensorSpec],
    *,
    allow_missing: bool = False,
) -> str | None:
    """Name the first tensor (in name order) where ``specs`` differ from ``reference``.

    ``allow_missing`` accepts specs that leave tensors out (a personalised
    update), but every tensor named must still fit. ``None``: they agree.
    """
    expected = schema_of(reference)
    actual: dict[str, tuple[tuple[int, ...], str]] = {}
    for spec in specs:
        if spec.name in actual:
            return f"tensor '{spec.name}' is listed twice"
        actual[spec.name] = (tuple(int(d) for d in spec.shape), spec.dtype)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            if allow_missing:
                continue
            return f"tensor '{name}' is missing"
        if name not in expected:
            return f"unexpected tensor '{name}'"
        (e_shape, e_dtype), (a_shape, a_dtype) = expected[name], actual[name]
        if e_shape != a_shape:
            return f"tensor '{name}' has shape {a_shape}, expected {e_shape}"
        if e_dtype != a_dtype:
            return f"tensor '{name}' has dtype {a_dtype}, expected {e_dtype}"
    return None


def compressed_update(specs: Sequence[pb.TensorSpec]) -> bool:
    """Whether an update's specs are one compressed payload (one ``uint8`` vector).

    Its tensors are checked against the reference when the server decodes it
    (:mod:`flmi.compression.wire`); the payload's size is bounded like any reply's.
    """
    return (
        len(specs) == 1
        and specs[0].name == Extra.COMPRESSED.value
        and specs[0].dtype == "uint8"
        and len(specs[0].shape) == 1
    )
