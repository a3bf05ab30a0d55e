"""What a compressor is, and error feedback around any lossy one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from flmi.compression.payload import Compressed
from flmi.core.errors import SchemaError
from flmi.core.params import Params

#: Prefix of the error-feedback residual tensors in a compressor's state.
RESIDUAL = "residual/"

#: Metadata key of the JSON list of tensor names a payload encodes, in order.
NAMES = "names"


class Codec(Protocol):
    """One lossy encoding of named tensors (no memory across rounds but ``state``)."""

    method: str

    def encode(
        self, *, update: Mapping[str, np.ndarray], state: Params, rng: np.random.Generator
    ) -> tuple[Compressed, Params]:
        """Encode ``update``; return the payload and the codec's new state (no residuals)."""
        ...

    def decode(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """The tensors ``payload`` stands for, shaped and typed as ``like``."""
        ...


class Compressor:
    """A codec, with error feedback (Seide et al. 2014; Karimireddy et al. 2019) or without.

    With error feedback, what a round's encoding drops is kept in the site's
    state (``residual/NAME``) and added to the next round's update, so over
    rounds the sent tensors plus the residual sum exactly to the updates.

    Parameters
    ----------
    codec
        The encoding.
    error_feedback
        Keep and re-send what the encoding drops.
    """

    def __init__(self, *, codec: Codec, error_feedback: bool) -> None:
        self.codec = codec
        self.error_feedback = error_feedback

    @property
    def method(self) -> str:
        """The ``[compression] method`` this compressor implements."""
        return self.codec.method

    def compress(
        self, *, update: Mapping[str, np.ndarray], state: Params, rng: np.random.Generator
    ) -> tuple[Compressed, Params]:
        """Compress one update.

        Parameters
        ----------
        update
            The site's update (a model delta), float tensors by name.
        state
            The site's compression state from the previous round (``{}`` at
            first); checkpoint it with the site.
        rng
            Randomness for stochastic rounding and initial projections (not
            privacy randomness: compression happens after any DP noise).

        Returns
        -------
        tuple
            The payload to send and the new state.
        """
        corrected = {k: np.asarray(v, dtype=np.float64) for k, v in update.items()}
        if self.error_feedback:
            for name, value in corrected.items():
                residual = state.get(RESIDUAL + name)
                if residual is not None:
                    if residual.shape != value.shape:
                        raise SchemaError(
                            f"compression state: residual of '{name}' has shape "
                            f"{residual.shape}, the update {value.shape}"
                        )
                    corrected[name] = value + residual
        codec_state = {k: v for k, v in state.items() if not k.startswith(RESIDUAL)}
        as_sent = {k: v.astype(np.float32) for k, v in corrected.items()}
        payload, new_state = self.codec.encode(update=as_sent, state=codec_state, rng=rng)
        if self.error_feedback:
            sent = self.codec.decode(payload=payload, like=as_sent)
            for name, value in corrected.items():
                new_state[RESIDUAL + name] = (value - sent[name].astype(np.float64)).astype(
                    np.float32
                )
        return payload, new_state

    def decompress(self, *, payload: Compressed, like: Mapping[str, np.ndarray]) -> Params:
        """The update ``payload`` stands for (a :class:`SchemaError` for another method)."""
        if payload.method != self.method:
            raise SchemaError(
                f"a '{payload.method}' compressed update reached a '{self.method}' decoder; "
                "every site and the server must share [compression] method"
            )
        return self.codec.decode(payload=payload, like=like)


def require_parts(payload: Compressed, name: str, parts: tuple[str, ...]) -> list[np.ndarray]:
    """The arrays ``NAME/PART`` of ``payload``, or a :class:`SchemaError` naming the missing one."""
    out = []
    for part in parts:
        key = f"{name}/{part}"
        if key not in payload.arrays:
            raise SchemaError(f"compressed update lacks '{key}' (tensor '{name}')")
        out.append(payload.arrays[key])
    return out


def payload_names(payload: Compressed) -> list[str]:
    """The tensor names ``payload`` encodes, in order, or a :class:`SchemaError`."""
    import json

    try:
        names = json.loads(payload.meta.get(NAMES, ""))
    except ValueError as err:
        raise SchemaError("a compressed update does not list its tensor names") from err
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SchemaError("a compressed update's tensor names must be a list of strings")
    if len(set(names)) != len(names):
        raise SchemaError("a compressed update names one tensor twice")
    return names
