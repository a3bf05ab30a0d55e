"""The data a config names: loaded or generated, and split into sites."""

from __future__ import annotations

from pathlib import Path

from flmi.config import Config
from flmi.core.errors import ConfigError
from flmi.data.arrays import FederatedData
from flmi.data.heart_disease import load_heart_disease
from flmi.data.medmnist import load_medmnist_npz
from flmi.data.partition import check_min_examples, partition
from flmi.data.synthetic import generate_hospitals, make_profiles
from flmi.data.synthetic_lesions import lesion_data
from flmi.data.tabular import load_csv_sites


def load_data(config: Config) -> FederatedData:
    """Load or generate the data and split it into sites, checking every site's size."""
    d, p = config.data, config.partition
    seed = p.seed if p.seed is not None else config.federation.seed
    if d.source == "medmnist":
        splits = load_medmnist_npz(path=Path(d.path))
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
    if d.source == "csv":
        data, _classes = load_csv_sites(
            path=Path(d.path),
            label_column=d.label_column,
            site_column=d.site_column,
            feature_columns=d.feature_columns,
            split_seed=d.split_seed,
            test_fraction=d.test_fraction,
            val_fraction=d.val_fraction,
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
    if d.source == "heart_disease":
        data = load_heart_disease(
            directory=Path(d.path), split_seed=d.split_seed, val_fraction=d.val_fraction
        )
        check_min_examples(
            data=data,
            min_examples_per_site=p.min_examples_per_site,
            require_val=d.val_fraction > 0,
        )
        return data
    if d.source == "synthetic_lesions":
        data = lesion_data(config, seed=seed)
        check_min_examples(data=data, min_examples_per_site=p.min_examples_per_site)
        return data
    profiles = make_profiles(num_sites=p.num_sites, seed=seed, n_patients_total=d.n_patients)
    data = generate_hospitals(profiles=profiles, seed=seed, image_size=d.image_size)
    check_min_examples(data=data, min_examples_per_site=p.min_examples_per_site)
    return data
