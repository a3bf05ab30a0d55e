"""The last predictions of a model on an input, kept while neither has changed.

A site scoring its final model asks for metrics, bootstrap intervals and a
score histogram of the same split, one call each; each needs the same
forward pass. :class:`LastPredictions` keeps the last one and gives it back
only for the same model object, the same input array and the same weights:
every tensor of the model's state the same object at the same address with
the same version counter (torch bumps it on every in-place write, loading
weights included).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Generic, TypeVar

import numpy as np
import torch

T = TypeVar("T")


Key = tuple[tuple[int, int, int], ...]


def weights_key(model: torch.nn.Module) -> Key:
    """Each parameter's and buffer's identity, address and version counter, in order."""
    return tuple(
        (id(t), t.data_ptr(), t._version)
        for t in itertools.chain(model.parameters(), model.buffers())
    )


class LastPredictions(Generic[T]):
    """One remembered prediction: the model (weakly), the input, the device and the weights."""

    def __init__(self) -> None:
        self._model: weakref.ref[torch.nn.Module] | None = None
        self._x: np.ndarray | None = None
        self._device: torch.device | None = None
        self._weights: Key = ()
        self._value: T | None = None

    def __reduce__(self) -> tuple[type[LastPredictions[T]], tuple[()]]:
        """Pickled or copied empty: what it remembers belongs to this process's model."""
        return (type(self), ())

    def get(
        self, *, model: torch.nn.Module, x: np.ndarray, device: torch.device, weights: Key
    ) -> T | None:
        """The remembered prediction if it is of ``model`` with ``weights`` on ``x``; else None."""
        if (
            self._value is None
            or self._model is None
            or self._model() is not model
            or self._x is not x
            or self._device != device
            or self._weights != weights
        ):
            return None
        return self._value

    def put(
        self,
        *,
        model: torch.nn.Module,
        x: np.ndarray,
        device: torch.device,
        weights: Key,
        value: T,
    ) -> None:
        """Remember ``value`` as the prediction of ``model`` with ``weights`` on ``x``."""
        self._model, self._x, self._device = weakref.ref(model), x, device
        self._weights, self._value = weights, value
