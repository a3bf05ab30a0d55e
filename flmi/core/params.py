"""Named float tensors and the arithmetic the server does on them.

``Params`` is a plain ``dict[str, np.ndarray]``: names matter (FedBN keeps some
layers local, secure aggregation masks tensor by tensor). Only floating-point
tensors are federated; integer buffers such as BatchNorm's
``num_batches_tracked`` stay with the model that owns them and are never
averaged (see :mod:`flmi.tasks.torch_params`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from flmi.core.errors import NonFiniteError, SchemaError

Params = dict[str, np.ndarray]


def schema_of(params: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Return ``{name: (shape, dtype)}`` for every tensor, in name order."""
    return {
        k: (tuple(int(d) for d in params[k].shape), str(params[k].dtype)) for k in sorted(params)
    }


def schema_hash(params: Mapping[str, np.ndarray]) -> str:
    """A SHA-256 over tensor names, shapes and dtypes (not values)."""
    text = ";".join(f"{k}:{shape}:{dtype}" for k, (shape, dtype) in schema_of(params).items())
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_schema(
    *, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], where: str
) -> None:
    """Raise :class:`SchemaError` naming the first tensor that differs.

    Parameters
    ----------
    expected, actual
        The reference tensors and the ones to check.
    where
        Who sent ``actual`` (for example ``"update from site 'a'"``), for the message.
    """
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing:
        raise SchemaError(f"{where}: tensor '{missing[0]}' is missing ({len(missing)} missing)")
    if extra:
        raise SchemaError(f"{where}: unexpected tensor '{extra[0]}' ({len(extra)} unexpected)")
    for name in sorted(expected):
        e, a = expected[name], actual[name]
        if e.shape != a.shape:
            raise SchemaError(
                f"{where}: tensor '{name}' has shape {tuple(a.shape)}, expected {tuple(e.shape)}"
            )
        if e.dtype != a.dtype:
            raise SchemaError(f"{where}: tensor '{name}' has dtype {a.dtype}, expected {e.dtype}")


def check_finite(params: Mapping[str, np.ndarray], *, where: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor holding NaN or Inf."""
    for name in sorted(params):
        if not np.isfinite(params[name]).all():
            raise NonFiniteError(f"{where}: tensor '{name}' holds NaN or Inf values")


def nbytes(params: Mapping[str, np.ndarray]) -> int:
    """Total payload size of the tensors in bytes."""
    return int(sum(a.nbytes for a in params.values()))


def weighted_mean(items: Sequence[tuple[str, float, Mapping[str, np.ndarray]]]) -> Params:
    """Weighted mean of tensors, summed in sorted order of the first field.

    Parameters
    ----------
    items
        ``(site, weight, params)`` triples. Weights must be positive; they are
        normalised here, so scaling all of them changes nothing. Every entry
        must share one schema (names, shapes and dtypes).

    Returns
    -------
    Params
        The mean in each tensor's own dtype, accumulated in float64 in sorted
        site order, so the result does not depend on the order of ``items``.
    """
    if not items:
        raise ValueError("weighted_mean needs at least one entry")
    ordered = sorted(items, key=lambda item: item[0])
    total = float(sum(w for _, w, _ in ordered))
    if not total > 0.0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    _, _, first = ordered[0]
    for site, _, params in ordered[1:]:
        check_same_schema(expected=first, actual=params, where=f"update from site '{site}'")
    out: Params = {}
    for name in sorted(first):
        acc = np.zeros(first[name].shape, dtype=np.float64)
        for _, weight, params in ordered:
            # np.float64 is not a "weak" scalar: the product is computed in float64.
            acc += np.float64(weight / total) * params[name]
        out[name] = acc.astype(first[name].dtype, copy=False)
    return out


def add_scaled(
    base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray], scale: float
) -> Params:
    """Return ``base + scale * delta`` tensor by tensor, in ``base``'s dtypes."""
    check_same_schema(expected=base, actual=delta, where="delta")
    return {k: (base[k] + scale * delta[k]).astype(base[k].dtype, copy=False) for k in sorted(base)}


def subtract(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Params:
    """Return ``a - b`` tensor by tensor."""
    check_same_schema(expected=a, actual=b, where="subtrahend")
    return {k: (a[k] - b[k]).astype(a[k].dtype, copy=False) for k in sorted(a)}


def copy_params(params: Mapping[str, np.ndarray]) -> Params:
    """Deep copy, so later in-place changes to the source cannot leak in."""
    return {k: np.array(v, copy=True) for k, v in params.items()}
