"""``[compression] method`` names: :data:`COMPRESSORS` (entry-point group ``flmi.compressors``).

Compression is its own registry kind rather than a client algorithm: a client
algorithm changes how a site trains, a compressor only how its finished
update travels, and the server needs the same part to decode it. Every
client algorithm composes with every compressor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flmi.compression.base import Compressor
from flmi.compression.powersgd import PowerSGD
from flmi.compression.quantize import Quantize
from flmi.compression.topk import TopK
from flmi.config.schema import CompressionConfig
from flmi.registry import PluginError, Registry


@dataclass(frozen=True)
class CompressorSpec:
    """A selectable compressor.

    Parameters
    ----------
    summary
        One line: what it does and its paper.
    build
        Makes the compressor from the ``[compression]`` table.
    linear
        Whether the decoded update is an unbiased, linear function of the
        update, so a secure sum of decoded updates is the sum of the updates
        in expectation (secure aggregation needs this).
    """

    summary: str
    build: Callable[[CompressionConfig], Compressor]
    linear: bool = False


def _check(name: str, part: object) -> None:
    if not isinstance(part, CompressorSpec):
        raise PluginError(
            f"compressor '{name}' must be a CompressorSpec, got {type(part).__name__}"
        )


COMPRESSORS: Registry[CompressorSpec] = Registry(
    kind="compressor", group="flmi.compressors", field="compression.method", check=_check
)

COMPRESSORS.register(
    "quantize",
    CompressorSpec(
        summary="stochastic bits-bit quantisation, one scale per tensor (QSGD, Alistarh 2017)",
        build=lambda c: Compressor(codec=Quantize(bits=c.bits), error_feedback=False),
        linear=True,
    ),
)
COMPRESSORS.register(
    "topk",
    CompressorSpec(
        summary="largest-magnitude fraction of each tensor, with error feedback",
        build=lambda c: Compressor(codec=TopK(fraction=c.fraction), error_feedback=True),
    ),
)
COMPRESSORS.register(
    "powersgd",
    CompressorSpec(
        summary="rank-r power iteration with error feedback (PowerSGD, Vogels 2019)",
        build=lambda c: Compressor(codec=PowerSGD(rank=c.rank), error_feedback=True),
    ),
)


def build_compressor(config: CompressionConfig) -> Compressor | None:
    """The compressor ``[compression]`` selects, or ``None`` for ``method = "none"``."""
    if config.method == "none":
        return None
    return COMPRESSORS.lookup(config.method).build(config)
