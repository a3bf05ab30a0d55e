"""Give each simulated site of a real image collection its own scanner.

A public collection such as BreastMNIST comes from one source, so splitting it
into sites gives hospitals whose images look alike. Real hospitals differ in
scanner as well as in size and label mix. With ``[partition] scanner_shift =
true`` every site's images (train, validation, test; unlabeled images are cut
from train later) pass through a scanner of its own: the same blur, bias
field, contrast curve, scale, offset and noise, over the same ranges and with
the same seeded Latin-hypercube draw, as the generated hospitals of
:mod:`flmi.data.synthetic`. The central test set becomes every site's test
images as its own scanner made them, so a central score is the model's score
over the hospitals as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.synthetic import MAX_SITES, MIN_SITES, HospitalProfile, _scanner, make_profiles

# Separates the scanner draws from the partition's draws made with the same seed.
_SCANNER_STREAM = 0x5CA1
# Intensities this far outside [0, 1] are not rounding: the images were normalised otherwise.
_RANGE_SLACK = 1e-3


#: The settings of a profile that make up its scanner (the rest is size and prevalence).
SCANNER_FIELDS = (
    "intensity_scale",
    "intensity_offset",
    "gamma",
    "noise_std",
    "blur_sigma",
    "bias_field",
)


def scanner_json(profile: HospitalProfile) -> dict[str, float]:
    """A profile's scanner settings as a JSON-ready table (``summary.json``'s ``site_scanners``)."""
    return {name: float(getattr(profile, name)) for name in SCANNER_FIELDS}


def site_scanners(*, site_names: list[str], seed: int) -> dict[str, HospitalProfile]:
    """Draw one scanner per site, in sorted site order, from ``seed``.

    The scanners are those :func:`flmi.data.synthetic.make_profiles` draws
    for as many generated hospitals; only their :data:`SCANNER_FIELDS` are used.

    Parameters
    ----------
    site_names
        The sites; 2 to 16 of them.
    seed
        The partition seed; the same seed gives the same scanners.

    Returns
    -------
    dict[str, HospitalProfile]
        Each site's profile, named after the site.

    Raises
    ------
    ConfigError
        Fewer than 2 or more than 16 sites.
    """
    names = sorted(site_names)
    if not MIN_SITES <= len(names) <= MAX_SITES:
        raise ConfigError(
            f"partition.scanner_shift: needs {MIN_SITES}..{MAX_SITES} sites, got {len(names)}; "
            "set partition.num_sites in that range or turn scanner_shift off"
        )
    profiles = make_profiles(num_sites=len(names), seed=seed)
    return {
        name: dataclasses.replace(profile, name=name)
        for name, profile in zip(names, profiles, strict=True)
    }


def apply_scanner_shift(data: FederatedData, *, seed: int) -> FederatedData:
    """Pass every site's images through that site's scanner.

    Parameters
    ----------
    data
        Sites of 2D images ``(N, C, H, W)`` with intensities in ``[0, 1]``;
        each channel is scanned like a grey image.
    seed
        The partition seed: it draws the scanners and their noise.

    Returns
    -------
    FederatedData
        The same sites, labels and sizes, with scanned images; ``central_test``
        is the concatenation of the sites' scanned test splits in sorted site
        order.

    Raises
    ------
    ConfigError
        The images are not 2D, or the sites are too few or too many.
    """
    scanners = site_scanners(site_names=list(data.sites), seed=seed)
    sites: dict[str, SiteSplits] = {}
    for position, name in enumerate(sorted(data.sites)):
        splits = data.sites[name]
        profile = scanners[name]
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SCANNER_STREAM, position]))
        sites[name] = SiteSplits(
            train=_scan(splits.train, rng=rng, profile=profile),
            val=_scan(splits.val, rng=rng, profile=profile),
            test=_scan(splits.test, rng=rng, profile=profile),
            unlabeled=None
            if splits.unlabeled is None
            else _scan_images(splits.unlabeled, rng=rng, profile=profile),
        )
    central = concat_splits([sites[name].test for name in sorted(sites)])
    return FederatedData(
        sites={name: sites[name] for name in data.sites},
        central_test=central,
        unreadable=data.unreadable,
    )


def _scan(split: ArraySplit, *, rng: np.random.Generator, profile: HospitalProfile) -> ArraySplit:
    return ArraySplit(x=_scan_images(split.x, rng=rng, profile=profile), y=split.y)


def _scan_images(
    x: np.ndarray, *, rng: np.random.Generator, profile: HospitalProfile
) -> np.ndarray:
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ConfigError(
            f"partition.scanner_shift: needs square 2D images (N, C, S, S), got shape "
            f"{tuple(x.shape)}; turn scanner_shift off for this data"
        )
    if x.size and (float(x.min()) < -_RANGE_SLACK or float(x.max()) > 1.0 + _RANGE_SLACK):
        raise ConfigError(
            f"partition.scanner_shift: needs intensities in [0, 1], got "
            f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; set data.transforms.intensity = "
            "'minmax' or turn scanner_shift off"
        )
    n, c, size, _ = x.shape
    if n == 0:
        return x.astype(np.float32, copy=True)
    flat = np.clip(x.reshape(n * c, size, size).astype(np.float32), 0.0, 1.0)
    return _scanner(rng=rng, x=flat, profile=profile).reshape(n, c, size, size)
