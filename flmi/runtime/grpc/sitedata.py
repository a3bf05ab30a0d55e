"""A hospital's own data, named in its ``SITE.toml``, loaded as one site.

``[data]`` of ``SITE.toml`` takes the keys of a federation config's ``[data]``
table for the sources that describe one hospital's files: ``manifest`` (a CSV
of DICOM, NIfTI, PNG or JPEG images), ``medmnist`` (an ``.npz`` with its own
train, validation and test splits) and ``csv`` (a table of numeric features).
The site's own train/validation/test split comes from the file (a split
column, or the ``.npz``'s splits) or from ``test_fraction``, ``val_fraction``
and ``split_seed``. The model's shape comes from this data and the federation's
``[task]``; the server checks it against its own at register. Paths stay at
the site: an error naming one is raised before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flmi.config import Config, config_from_dict
from flmi.core.errors import ConfigError, DataError
from flmi.data.arrays import FederatedData
from flmi.data.sources import load_data


def site_data_config(federation: Config, *, table: Mapping[str, Any], where: Path) -> Config:
    """The federation's config with ``[data]`` replaced by this site's own, as one site.

    Parameters
    ----------
    federation
        The consortium's config (task, model, training).
    table
        ``SITE.toml``'s ``[data]`` without ``federation_config``; paths already absolute.
    where
        The ``SITE.toml`` file, named in every error.
    """
    raw = federation.to_dict()
    raw["data"] = dict(table)
    partition: dict[str, Any] = {
        # A site column keeps its rows together; otherwise the whole file is this site.
        "method": "natural" if table.get("site_column") else "iid",
        "num_sites": 1,
        "min_examples_per_site": federation.partition.min_examples_per_site,
    }
    if federation.partition.seed is not None:
        partition["seed"] = federation.partition.seed
    raw["partition"] = partition
    # The site's own view holds one site: the federation's min_sites is the server's business.
    raw["federation"] = {**raw["federation"], "min_sites": 1}
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [data]: {exc}") from None


def load_site_data(config: Config, *, site: str, where: Path) -> FederatedData:
    """Load this site's own data (``config`` from :func:`site_data_config`) under its name."""
    try:
        data = load_data(config)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{where}: [data]: {exc}") from None
    if len(data.sites) != 1:
        raise ConfigError(
            f"{where}: data.site_column = '{config.data.site_column}' names "
            f"{len(data.sites)} sites; a hospital's file holds its own rows only"
        )
    (splits,) = data.sites.values()
    (unreadable,) = data.unreadable.values() if data.unreadable else ({},)
    return FederatedData(
        sites={site: splits},
        central_test=splits.test,
        unreadable={site: unreadable} if unreadable else {},
    )
