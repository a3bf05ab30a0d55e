"""Each built-in data source's own ``[data]`` checks (no torch, no data read).

Every function takes the whole config, because a source's keys constrain
``[partition]`` too (a table with a site column comes split already), and
raises a :class:`ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError
from flmi.data.download import medmnist_file

if TYPE_CHECKING:
    from flmi.config import Config


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_csv(c: Config) -> None:
    """A CSV table with a site column."""
    d, p = c.data, c.partition
    for key in ("path", "label_column", "site_column"):
        _require(bool(getattr(d, key)), f"data.{key} is required when data.source = 'csv'")
    _require(
        p.method == "natural",
        "a CSV with a site column comes split already: set partition.method = 'natural'",
    )


def _own_sites(c: Config, *, source: str, title: str, sites: int, unit: str) -> None:
    """A collection that comes split into its own ``sites``: a path and that natural split."""
    d, p = c.data, c.partition
    _require(bool(d.path), f"data.path is required when data.source = '{source}'")
    _require(
        p.method == "natural" and p.num_sites == sites,
        f"{title} has its own {sites} {unit}: set partition.method = 'natural' "
        f"and partition.num_sites = {sites}",
    )


def check_tcga_brca(c: Config) -> None:
    """FLamby's Fed-TCGA-BRCA: its own 6 regions."""
    _own_sites(c, source="tcga_brca", title="Fed-TCGA-BRCA", sites=6, unit="regions")


def check_heart_disease(c: Config) -> None:
    """FLamby's Fed-Heart-Disease: its own 4 hospitals."""
    _own_sites(c, source="heart_disease", title="Fed-Heart-Disease", sites=4, unit="hospitals")


def check_medmnist(c: Config) -> None:
    """A MedMNIST file, by path or by name (an unknown name is an error now, not after start-up)."""
    d, p = c.data, c.partition
    if d.name:
        medmnist_file(d.name)
    _require(
        bool(d.path) or bool(d.name),
        "data.source = 'medmnist' needs data.path (a .npz file) or data.name "
        "(e.g. 'breastmnist', read from data.cache_dir)",
    )
    _require(
        p.method in ("iid", "dirichlet", "quantity"),
        f"partition.method = '{p.method}' does not apply to MedMNIST; "
        "use 'iid', 'dirichlet' or 'quantity'",
    )


def check_generated(c: Config) -> None:
    """Generated hospitals (``synthetic``, ``synthetic_age``, ``synthetic_lesions``)."""
    d, p = c.data, c.partition
    _require(
        p.method == "natural",
        f"partition.method = '{p.method}': generated hospitals come split already; use 'natural'",
    )
    _require(
        2 <= p.num_sites <= 16,
        f"partition.num_sites must be 2..16 for synthetic data, got {p.num_sites}",
    )
    _require(d.image_size >= 16, f"data.image_size must be at least 16, got {d.image_size}")
    _require(
        d.n_patients >= 10 * p.num_sites,
        f"data.n_patients = {d.n_patients} is too few for {p.num_sites} hospitals",
    )


def check_manifest(c: Config) -> None:
    """A CSV of image paths (``[data.transforms]`` checks its own values)."""
    d, p = c.data, c.partition
    _require(bool(d.path), "data.path is required when data.source = 'manifest' (the CSV file)")
    _require(bool(d.image_column), "data.image_column must name the column of image paths")
    _require(
        bool(d.label_column) or bool(d.mask_column),
        "data.source = 'manifest' needs data.label_column (classification) or "
        "data.mask_column (segmentation masks)",
    )
    _require(
        d.empty_labels == "error" or bool(d.label_column),
        "data.empty_labels = 'unlabeled' marks rows with an empty data.label_column cell; "
        "name the label column, or leave empty_labels at 'error'",
    )
    if d.site_column:
        _require(
            p.method == "natural",
            "a manifest with a site column comes split already: set partition.method = 'natural'",
        )
    else:
        _require(
            p.method in ("iid", "dirichlet", "quantity"),
            f"partition.method = '{p.method}' needs data.site_column; without one, use "
            "'iid', 'dirichlet' or 'quantity'",
        )


def check_synthetic_lesions(c: Config) -> None:
    """Generated hospitals with lesions, in 2D or 3D."""
    check_generated(c)
    _require(
        c.data.spatial_dims in (2, 3),
        f"data.spatial_dims must be 2 or 3, got {c.data.spatial_dims}",
    )
