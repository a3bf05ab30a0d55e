"""The data a config names: loaded or generated, and split into sites."""

from __future__ import annotations

from flmi.config import Config, partition_seed
from flmi.core.errors import ConfigError
from flmi.data.arrays import FederatedData
from flmi.data.builtin_sources import medmnist_path
from flmi.data.scanner_shift import apply_scanner_shift
from flmi.data.source_registry import SOURCES, source_for

__all__ = ["load_data", "medmnist_path"]


def load_data(config: Config) -> FederatedData:
    """Load or generate the data and split it into sites, checking every site's size.

    With ``partition.scanner_shift`` each site's images then pass through a
    scanner of its own (:func:`flmi.data.scanner_shift.apply_scanner_shift`).
    """
    seed = partition_seed(config)
    spec = source_for(config.data.source)
    if not config.partition.scanner_shift:
        return spec.load(config, seed)
    if not spec.scanner_shift:
        shifted = [name for name in SOURCES.names() if SOURCES[name].scanner_shift]
        raise ConfigError(
            f"partition.scanner_shift: works on {' and '.join(shifted)} images, "
            f"not on data.source = {config.data.source!r} (generated hospitals already have "
            "scanners of their own; tables have no images); remove partition.scanner_shift"
        )
    return apply_scanner_shift(spec.load(config, seed), seed=seed)
