"""flmi's own data sources: how each reads or generates a federation's data.

:mod:`flmi.data.source_registry` registers each ``load_NAME`` under its
``[data] source`` name; :func:`flmi.data.sources.load_data` calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flmi.core.errors import ConfigError, DataError
from flmi.data import heart_disease, manifest, tcga_brca
from flmi.data.arrays import FederatedData
from flmi.data.download import DEFAULT_CACHE, fetch_medmnist, file_md5, medmnist_file
from flmi.data.medmnist import load_medmnist_npz
from flmi.data.partition import check_min_examples, partition
from flmi.data.synthetic import generate_hospitals, make_profiles
from flmi.data.synthetic_age import generate_age_hospitals
from flmi.data.synthetic_lesions import lesion_data
from flmi.data.tabular import load_csv_sites

if TYPE_CHECKING:
    from flmi.config import Config


def load_medmnist(config: Config, seed: int) -> FederatedData:
    """A MedMNIST file's official splits, partitioned into ``partition.num_sites`` sites."""
    p = config.partition
    splits = load_medmnist_npz(path=medmnist_path(config))
    return partition(
        train=splits.train,
        val=splits.val,
        test=splits.test,
        method=p.method,
        num_sites=p.num_sites,
        seed=seed,
        alpha=p.alpha,
        min_examples_per_site=p.min_examples_per_site,
    )


def load_csv(config: Config, seed: int) -> FederatedData:
    """A table split by its site column; each site split by test and validation fractions."""
    d, p = config.data, config.partition
    data, _classes = load_csv_sites(
        path=Path(d.path),
        label_column=d.label_column,
        site_column=d.site_column,
        feature_columns=d.feature_columns,
        split_seed=d.split_seed,
        test_fraction=d.test_fraction,
        val_fraction=d.val_fraction,
        numeric_label=config.task.name == "regression",
    )
    if len(data.sites) != p.num_sites:
        raise ConfigError(
            f"partition.num_sites = {p.num_sites}, but column '{d.site_column}' names "
            f"{len(data.sites)} sites ({', '.join(data.sites)}); set partition.num_sites = "
            f"{len(data.sites)}"
        )
    check_min_examples(
        data=data, min_examples_per_site=p.min_examples_per_site, require_val=d.val_fraction > 0
    )
    return data


class _FlambyLoader(Protocol):
    def __call__(
        self, *, directory: Path, split_seed: int, val_fraction: float
    ) -> FederatedData: ...


def _flamby_sites(config: Config, load: _FlambyLoader) -> FederatedData:
    """A FLamby collection already split into its own sites, with its size check."""
    d, p = config.data, config.partition
    data = load(directory=Path(d.path), split_seed=d.split_seed, val_fraction=d.val_fraction)
    check_min_examples(
        data=data, min_examples_per_site=p.min_examples_per_site, require_val=d.val_fraction > 0
    )
    return data


def load_heart_disease(config: Config, seed: int) -> FederatedData:
    """FLamby's four Fed-Heart-Disease hospitals (``seed`` unused: FLamby's split)."""
    return _flamby_sites(config, heart_disease.load_heart_disease)


def load_synthetic_lesions(config: Config, seed: int) -> FederatedData:
    """Generated hospitals whose images hold lesions."""
    p = config.partition
    data = lesion_data(config, seed=seed)
    check_min_examples(data=data, min_examples_per_site=p.min_examples_per_site)
    return data


def load_tcga_brca(config: Config, seed: int) -> FederatedData:
    """FLamby's six Fed-TCGA-BRCA regions (``seed`` unused: FLamby's split)."""
    return _flamby_sites(config, tcga_brca.load_tcga_brca)


def load_synthetic(config: Config, seed: int) -> FederatedData:
    """Generated hospitals with scanner shift, label skew and unequal sizes."""
    d, p = config.data, config.partition
    profiles = make_profiles(num_sites=p.num_sites, seed=seed, n_patients_total=d.n_patients)
    data = generate_hospitals(profiles=profiles, seed=seed, image_size=d.image_size)
    check_min_examples(data=data, min_examples_per_site=p.min_examples_per_site)
    return data


def load_synthetic_age(config: Config, seed: int) -> FederatedData:
    """Generated hospitals for age regression (the same scanners, plus age shift)."""
    d, p = config.data, config.partition
    profiles = make_profiles(num_sites=p.num_sites, seed=seed, n_patients_total=d.n_patients)
    data = generate_age_hospitals(profiles=profiles, seed=seed, image_size=d.image_size)
    check_min_examples(data=data, min_examples_per_site=p.min_examples_per_site)
    return data


def medmnist_path(config: Config) -> Path:
    """The MedMNIST file: ``data.path``, or ``data.name`` from the cache (downloaded if allowed).

    With both set, the file at ``data.path`` must have the official MD5 of ``data.name``.
    """
    d = config.data
    if d.path:
        path = Path(d.path)
        if d.name and path.is_file():
            entry = medmnist_file(d.name)
            found = file_md5(path)
            if found != entry.md5:
                raise DataError(
                    f"{path}: MD5 {found} is not the official MD5 of '{entry.name}' "
                    f"({entry.md5}); download the file again, or leave data.name out to "
                    "use this file as it is"
                )
        return path
    return fetch_medmnist(
        name=d.name,
        cache_dir=Path(d.cache_dir) if d.cache_dir else DEFAULT_CACHE,
        allow_download=d.allow_download,
        url=d.download_url,
    )


def load_manifest(config: Config, seed: int) -> FederatedData:
    """A CSV of image paths, read through ``[data.transforms]`` and split into sites."""
    d, p = config.data, config.partition
    if d.mask_column and config.task.name == "classification":
        raise ConfigError(
            "data.mask_column gives segmentation masks, which [task] name = 'classification' "
            "cannot use; set data.label_column and leave mask_column out"
        )
    loaded = manifest.load_manifest(
        path=Path(d.path),
        image_column=d.image_column,
        transforms=d.transforms,
        label_column=d.label_column,
        mask_column=d.mask_column,
        site_column=d.site_column,
        split_column=d.split_column,
        on_unreadable=d.on_unreadable,
        empty_labels=d.empty_labels,
    )
    data = manifest.manifest_federated_data(
        loaded=loaded,
        split_seed=d.split_seed,
        test_fraction=d.test_fraction,
        val_fraction=d.val_fraction,
        method=p.method,
        num_sites=p.num_sites,
        seed=seed,
        alpha=p.alpha,
    )
    if p.method == "natural" and len(data.sites) != p.num_sites:
        raise ConfigError(
            f"partition.num_sites = {p.num_sites}, but column '{d.site_column}' of the manifest "
            f"names {len(data.sites)} sites with readable images ({', '.join(data.sites)}); "
            f"set partition.num_sites = {len(data.sites)}"
        )
    require_val = d.val_fraction > 0 or bool(d.split_column)
    check_min_examples(
        data=data, min_examples_per_site=p.min_examples_per_site, require_val=require_val
    )
    return data
