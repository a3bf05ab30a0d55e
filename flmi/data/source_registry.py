"""The data sources ``[data] source`` can name, each with its own checks and loader.

:data:`SOURCES` is a :class:`flmi.registry.Registry` of :class:`DataSourceSpec`.
flmi's own sources are registered below exactly as a plug-in's are
(entry-point group ``flmi.data_sources``; see ``docs/extending.md``). A
source checks its own ``[data]`` keys before anything is read
(:attr:`DataSourceSpec.check`) and loads the federation's data
(:attr:`DataSourceSpec.load`): every site's train, validation and test
splits and the central test set, as a :class:`flmi.data.arrays.FederatedData`.

This module imports neither torch nor the loaders: each built-in loader is
imported when a run first loads its data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flmi.data import source_checks
from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check

if TYPE_CHECKING:
    from flmi.config import Config
    from flmi.data.arrays import FederatedData

#: ``load(config, seed)``: the federation's data; ``seed`` is the partition seed.
Loader = Callable[["Config", int], "FederatedData"]


def _no_check(_config: Config) -> None:
    return None


@dataclass(frozen=True)
class DataSourceSpec:
    """A selectable data source.

    Parameters
    ----------
    summary
        One line: what the source reads or generates.
    load
        ``load(config, seed)``: read or generate the data and split it into
        sites (``seed`` is ``partition.seed``, else ``federation.seed``). It
        raises :class:`flmi.core.errors.DataError` for a bad file and
        :class:`flmi.core.errors.ConfigError` naming the key to change.
    check
        ``check(config)``: the source's own ``[data]`` (and ``[partition]``)
        keys, checked when the config is read, before any data is touched.
    tasks
        The ``[task] name`` values whose targets the source provides (beyond
        the sources each task lists itself).
    scanner_shift
        Whether ``partition.scanner_shift`` may pass its 2D images through
        per-site scanners.
    input_shape
        ``(channels, spatial_dims)`` when known without reading any data (a
        deployment server holds none); ``None``: ``[task]`` must give them.
    at_site
        Whether a hospital may name it in its own ``SITE.toml`` ``[data]``
        (the source describes one hospital's own files).
    """

    summary: str
    load: Loader
    check: Callable[[Config], None] = _no_check
    tasks: tuple[str, ...] = ()
    scanner_shift: bool = False
    input_shape: tuple[int, int] | None = None
    at_site: bool = False


SOURCES: Registry[DataSourceSpec] = Registry(
    kind="data source",
    group="flmi.data_sources",
    field="data.source",
    check=instance_check("data source", DataSourceSpec),
)


def source_for(name: str) -> DataSourceSpec:
    """The source ``[data] source`` names (a :class:`ConfigError` listing the known ones)."""
    return SOURCES.lookup(name)


def _builtin_loader(name: str) -> Loader:
    def load(config: Config, seed: int) -> FederatedData:
        from flmi.data import builtin_sources

        loader: Loader = getattr(builtin_sources, f"load_{name}")
        return loader(config, seed)

    return load


def _builtin(name: str, spec: DataSourceSpec) -> None:
    SOURCES.register(name, spec, origin=BUILTIN_ORIGIN)


_builtin(
    "csv",
    DataSourceSpec(
        summary="a CSV table whose site column names each row's hospital",
        load=_builtin_loader("csv"),
        check=source_checks.check_csv,
        at_site=True,
    ),
)
_builtin(
    "heart_disease",
    DataSourceSpec(
        summary="FLamby's Fed-Heart-Disease: four UCI hospitals",
        load=_builtin_loader("heart_disease"),
        check=source_checks.check_heart_disease,
    ),
)
_builtin(
    "manifest",
    DataSourceSpec(
        summary="a CSV of image paths (PNG, JPEG, DICOM, NIfTI) with labels or masks",
        load=_builtin_loader("manifest"),
        check=source_checks.check_manifest,
        scanner_shift=True,
        at_site=True,
    ),
)
_builtin(
    "medmnist",
    DataSourceSpec(
        summary="a MedMNIST .npz file, by path or by name (downloaded and MD5-checked)",
        load=_builtin_loader("medmnist"),
        check=source_checks.check_medmnist,
        scanner_shift=True,
        at_site=True,
    ),
)
_builtin(
    "synthetic",
    DataSourceSpec(
        summary="generated hospitals with scanner shift, label skew and unequal sizes",
        load=_builtin_loader("synthetic"),
        check=source_checks.check_generated,
        input_shape=(1, 2),
    ),
)
_builtin(
    "synthetic_age",
    DataSourceSpec(
        summary="generated hospitals for age regression (scanner and age shift)",
        load=_builtin_loader("synthetic_age"),
        check=source_checks.check_generated,
    ),
)
_builtin(
    "synthetic_lesions",
    DataSourceSpec(
        summary="generated 2D or 3D images with lesions: masks, or lesion labels",
        load=_builtin_loader("synthetic_lesions"),
        check=source_checks.check_synthetic_lesions,
    ),
)
_builtin(
    "tcga_brca",
    DataSourceSpec(
        summary="FLamby's Fed-TCGA-BRCA: six regions, survival",
        load=_builtin_loader("tcga_brca"),
        check=source_checks.check_tcga_brca,
    ),
)
