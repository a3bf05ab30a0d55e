"""Generated multi-hospital "age from a scan" images, deterministic by seed.

The regression counterpart of :mod:`flmi.data.synthetic`: the same hospitals
(unequal sizes, each with its own scanner: intensity scale and offset,
contrast curve, noise, blur, bias field) on the same tissue texture, but each
image shows a dark central structure (think of the ventricles of an ageing
brain) whose size grows with the patient's age, blurred by individual
variation, so age is learnable but not exactly. Hospitals also differ in
their patients' ages (a younger and an older population): label shift next
to scanner shift.
"""

from __future__ import annotations

import numpy as np

from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.synthetic import HospitalProfile, _scanner, _stratified_split, _tissue

AGE_RANGE = (18.0, 95.0)
_MEAN_AGE = (40.0, 70.0)  # each hospital's mean age is spread over this range
_AGE_STD = 12.0
_AXES_PX = (1.5, 7.0)  # the structure's half-axes at the youngest and oldest age
_INDIVIDUAL = 0.15  # relative size variation between patients of the same age
_DEPTH = 0.35  # how much darker the structure is than tissue
MIN_IMAGE_SIZE = 16


def generate_age_hospitals(
    *,
    profiles: list[HospitalProfile],
    seed: int,
    image_size: int = 28,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> FederatedData:
    """Every hospital's images, ages (years, float32) and train/val/test splits.

    Parameters
    ----------
    profiles
        The hospitals and their scanners, e.g. from
        :func:`flmi.data.synthetic.make_profiles` (prevalence is unused).
    seed
        Seed; each hospital draws from its own generator.
    image_size
        Side of the square images, at least 16.
    val_fraction, test_fraction
        Shares of each hospital's patients in its validation and test splits.

    Returns
    -------
    FederatedData
        float32 images ``(N, 1, S, S)`` in ``[0, 1]`` and float32 ages ``(N,)``.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"data.image_size must be at least {MIN_IMAGE_SIZE} for age data, got {image_size}"
        )
    if not profiles:
        raise ConfigError("partition.num_sites: no hospitals to generate")
    means = np.linspace(*_MEAN_AGE, num=len(profiles))
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xA6E])).permutation(len(profiles))
    sites: dict[str, SiteSplits] = {}
    for position, profile in enumerate(profiles):
        rng = np.random.default_rng(np.random.SeedSequence([seed, position, 0xA6E]))
        n = profile.n_patients
        age = np.clip(rng.normal(means[order[position]], _AGE_STD, size=n), *AGE_RANGE)
        x = _tissue(rng=rng, n=n, size=image_size) - _structure(rng=rng, age=age, size=image_size)
        x = _scanner(rng=rng, x=np.clip(x, 0.0, 1.0), profile=profile)[:, np.newaxis]
        train, val, test = _stratified_split(
            rng=rng,
            y=np.zeros(n, dtype=np.int64),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
        y = age.astype(np.float32)
        sites[profile.name] = SiteSplits(
            train=ArraySplit(x=x[train], y=y[train]),
            val=ArraySplit(x=x[val], y=y[val]),
            test=ArraySplit(x=x[test], y=y[test]),
        )
    return FederatedData(
        sites=sites, central_test=concat_splits([sites[s].test for s in sorted(sites)])
    )


def _structure(*, rng: np.random.Generator, age: np.ndarray, size: int) -> np.ndarray:
    """A soft dark ellipse near the centre; its half-axes grow linearly with age."""
    n = age.shape[0]
    low, high = AGE_RANGE
    scale = size / 28.0
    axis = (_AXES_PX[0] + (_AXES_PX[1] - _AXES_PX[0]) * (age - low) / (high - low)) * scale
    a = axis * (1 + _INDIVIDUAL * rng.standard_normal(n))
    b = axis * 0.7 * (1 + _INDIVIDUAL * rng.standard_normal(n))
    centre = (size - 1) / 2.0 + rng.normal(0.0, 1.0, size=(2, n))
    grid = np.arange(size, dtype=np.float64)
    dy = (grid[None, :, None] - centre[0][:, None, None]) / np.maximum(a, 0.5)[:, None, None]
    dx = (grid[None, None, :] - centre[1][:, None, None]) / np.maximum(b, 0.5)[:, None, None]
    edge = np.minimum(6.0 * (np.sqrt(dy * dy + dx * dx) - 1.0), 50.0)
    out: np.ndarray = (_DEPTH / (1.0 + np.exp(edge))).astype(np.float32)
    return out
