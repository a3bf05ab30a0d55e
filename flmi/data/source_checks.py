"""Each built-in data source's own ``[data]`` checks (no torch, no data read).

Every function takes the whole config, because a source's keys constrain
``[partition]`` too (a table with a site column comes split already), and
raises a :class:`ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError

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
    """A MedMNIST file, by path or by name."""
    d, p = c.data, c.partition
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
    """A CSV of image paths and its ``[data.transforms]``."""
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
    t = d.transforms
    _require(
        len(t.spatial_size) in (0, 2, 3) and all(v >= 1 for v in t.spatial_size),
        f"data.transforms.spatial_size must hold 2 (images) or 3 (volumes) positive sizes, "
        f"got {t.spatial_size}",
    )
    _require(
        len(t.spacing) in (0, 2, 3) and all(v > 0 for v in t.spacing),
        f"data.transforms.spacing must hold 2 or 3 positive voxel sizes in mm, got {t.spacing}",
    )
    _require(
        not (t.spatial_size and t.spacing) or len(t.spatial_size) == len(t.spacing),
        f"data.transforms.spacing {t.spacing} and spatial_size {t.spatial_size} must have "
        "one value per spatial axis each",
    )
    if t.orientation:
        _require(
            len(t.orientation) == 3 and set(t.orientation.upper()) <= set("LRAPSI"),
            f"data.transforms.orientation must be three axis codes such as 'RAS', "
            f"got {t.orientation!r}",
        )
        _require(
            len(t.spatial_size) != 2 and len(t.spacing) != 2,
            "data.transforms.orientation applies to volumes: give spatial_size (or spacing) "
            "3 values, or leave orientation out",
        )
    _require(
        t.channels in (0, 1, 3),
        f"data.transforms.channels must be 0 (keep), 1 or 3, got {t.channels}",
    )
    _require(
        t.window_width > 0,
        f"data.transforms.window_width must be positive, got {t.window_width}",
    )


def check_synthetic_lesions(c: Config) -> None:
    """Generated hospitals with lesions, in 2D or 3D."""
    check_generated(c)
    _require(
        c.data.spatial_dims in (2, 3),
        f"data.spatial_dims must be 2 or 3, got {c.data.spatial_dims}",
    )
