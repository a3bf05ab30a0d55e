"""A compressed update inside a :class:`~flmi.core.messages.ClientUpdate`, and back.

The site sends its change from the weights it was sent, compressed, as one
``uint8`` tensor named :attr:`~flmi.core.keys.Extra.COMPRESSED` (the
safetensors bytes of the payload), with ``kind = DELTA``: every runtime
carries it as it carries any tensor, so the bytes counted
(:meth:`~flmi.core.messages.ClientUpdate.payload_bytes`) are the bytes that
travel. The server decodes it against the weights it sent before any check
or aggregation sees the update.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np

from flmi.compression.base import Compressor, payload_names
from flmi.compression.payload import Compressed
from flmi.compression.registry import build_compressor
from flmi.config.schema import CompressionConfig
from flmi.core.errors import ConfigError, SchemaError
from flmi.core.keys import Extra, HParam
from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    HParamValue,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params

log = logging.getLogger(__name__)

#: Prefix of the compression state in a site's :class:`~flmi.site.state.SiteState`.
STATE = "compression/"


def compressor_from_hparams(hparams: Mapping[str, HParamValue]) -> Compressor | None:
    """The uplink compressor a round's instruction asks for (``None``: send in full)."""
    method = hparams.get(HParam.COMPRESSION)
    if method is None:
        return None
    try:
        config = CompressionConfig(
            method=str(method),
            bits=int(hparams.get(HParam.COMPRESSION_BITS, 8)),
            fraction=float(hparams.get(HParam.COMPRESSION_FRACTION, 0.01)),
            rank=int(hparams.get(HParam.COMPRESSION_RANK, 4)),
        )
        return build_compressor(config)
    except (ConfigError, ValueError) as err:
        raise SchemaError(f"the round's compression settings are invalid: {err}") from err


def compress_delta(
    *,
    compressor: Compressor,
    delta: Mapping[str, np.ndarray],
    state: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[Params, Params]:
    """``({COMPRESSED: bytes as uint8}, new state)`` for a site's change ``delta``.

    ``state`` is the site's whole state; the compressor sees its own part
    (prefixed :data:`STATE`) and the returned state holds that part alone.
    """
    own = {k[len(STATE) :]: v for k, v in state.items() if k.startswith(STATE)}
    payload, new_state = compressor.compress(update=delta, state=own, rng=rng)
    data = np.frombuffer(payload.to_bytes(), dtype=np.uint8).copy()
    return {Extra.COMPRESSED.value: data}, {STATE + k: v for k, v in new_state.items()}


def is_compressed(update: ClientUpdate) -> bool:
    """Whether ``update`` carries a compressed payload."""
    return Extra.COMPRESSED.value in update.params


def decompress_update(
    update: ClientUpdate, *, sent: Mapping[str, np.ndarray], compressor: Compressor
) -> ClientUpdate:
    """The update with its payload decoded into tensors shaped as the weights ``sent``.

    Raises
    ------
    SchemaError
        The payload is malformed, of another method, or names a tensor that
        was not sent.
    """
    raw = update.params[Extra.COMPRESSED.value]
    if raw.dtype != np.uint8 or raw.ndim != 1 or len(update.params) != 1:
        raise SchemaError(f"site '{update.site}': a compressed update must be one uint8 vector")
    payload = Compressed.from_bytes(raw.tobytes())
    names = payload_names(payload)
    missing = [n for n in names if n not in sent]
    if missing:
        raise SchemaError(f"site '{update.site}': compressed tensor '{missing[0]}' was not sent")
    like = {n: sent[n] for n in names}
    params = compressor.decompress(payload=payload, like=like)
    return dataclasses.replace(update, params=params, kind=UpdateKind.DELTA)


def decompress_replies(
    replies: Mapping[str, TrainReply], instructions: Mapping[str, TrainInstruction]
) -> dict[str, TrainReply]:
    """Every compressed update decoded against the weights its site was sent.

    A payload that does not decode, or one the round did not ask for,
    becomes that site's :class:`~flmi.core.messages.ClientError`
    (``schema_mismatch``): the round goes on without it, and says so.
    """
    out: dict[str, TrainReply] = {}
    for site, reply in replies.items():
        if not isinstance(reply, ClientUpdate) or not is_compressed(reply):
            out[site] = reply
            continue
        instruction = instructions.get(site)
        try:
            compressor = (
                None if instruction is None else compressor_from_hparams(instruction.hparams)
            )
            if compressor is None or instruction is None:
                raise SchemaError("sent a compressed update, but the round asked for none")
            out[site] = decompress_update(reply, sent=instruction.params, compressor=compressor)
        except SchemaError as err:
            log.warning("rejected update from %s: %s", site, err)
            out[site] = ClientError(site=site, code=ErrorCode.SCHEMA_MISMATCH, message=str(err))
    return out
