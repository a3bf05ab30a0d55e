"""``blobs``: generated hospitals whose images hold a bright blob (class 1) or none (class 0).

Its own ``[data]`` keys are checked by :func:`check`: ``image_size`` and
``n_patients`` (the hospitals are ``partition.num_sites``, split naturally).
"""

from __future__ import annotations

import numpy as np

from flmi import Config, DataSourceSpec
from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits


def check(config: Config) -> None:
    """The source's own keys, before anything is generated."""
    d, p = config.data, config.partition
    if d.image_size < 8:
        raise ConfigError(f"data.image_size must be at least 8 for blobs, got {d.image_size}")
    if p.method != "natural":
        raise ConfigError(
            "data.source = 'blobs' generates its hospitals: set partition.method = 'natural'"
        )
    if d.n_patients < 20 * p.num_sites:
        raise ConfigError(
            f"data.n_patients = {d.n_patients} is too few for {p.num_sites} hospitals; "
            f"set at least {20 * p.num_sites}"
        )


def _images(rng: np.random.Generator, n: int, size: int, contrast: float) -> ArraySplit:
    y = rng.integers(0, 2, size=n)
    x = rng.normal(0.2, 0.05, size=(n, 1, size, size))
    grid = np.arange(size)
    for i in np.flatnonzero(y):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        blob = np.exp(-((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) / (size / 4) ** 2)
        x[i, 0] += contrast * blob
    return ArraySplit(x=np.clip(x, 0, 1).astype(np.float32), y=y.astype(np.int64))


def load(config: Config, seed: int) -> FederatedData:
    """``partition.num_sites`` hospitals, each with its own blob contrast, from ``seed``."""
    d, p = config.data, config.partition
    rng = np.random.default_rng(seed)
    per_site = d.n_patients // p.num_sites
    sites: dict[str, SiteSplits] = {}
    for k in range(p.num_sites):
        contrast = 0.6 + 0.1 * k
        n_test = max(4, int(per_site * d.test_fraction))
        sites[f"hospital_{k + 1}"] = SiteSplits(
            train=_images(rng, per_site - 2 * n_test, d.image_size, contrast),
            val=_images(rng, n_test, d.image_size, contrast),
            test=_images(rng, n_test, d.image_size, contrast),
        )
    central = concat_splits([s.test for _, s in sorted(sites.items())])
    return FederatedData(sites=sites, central_test=central)


BLOBS = DataSourceSpec(
    summary="blobs: generated hospitals, a bright blob or none (example plug-in)",
    load=load,
    check=check,
    tasks=("classification",),
)
