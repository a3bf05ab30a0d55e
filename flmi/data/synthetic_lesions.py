"""Generated multi-hospital lesion-segmentation data, 2D and 3D, deterministic by seed.

Each patient's image is a smooth random tissue texture with zero, one or more
soft-edged ellipsoidal lesions; the mask labels every pixel (or voxel) inside a
lesion with that lesion's class (``1 .. lesion_classes``; 0 is background).
Lesion classes differ in brightness: odd classes are brighter than the tissue,
even classes darker, and higher classes more so.

The hospitals differ the way the hospitals of :mod:`flmi.data.synthetic` do
(the same :class:`~flmi.data.synthetic.HospitalProfile` draw: number of
patients, lesion prevalence, intensity scale and offset, contrast curve, noise,
blur and bias field) and, in addition, in the typical size of their lesions.
The same masks also give classification labels: lesion present or not
(:func:`lesion_present`) and which lesion classes a patient has
(:func:`lesion_classes_present`, for multi-label classification).

Everything is vectorised across patients; loops run only over lesion slots
(at most :data:`MAX_LESIONS`) and spatial axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flmi.core.errors import ConfigError
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.synthetic import (
    HospitalProfile,
    _blur_matrix,
    _stratified_split,
    check_profiles,
    check_split_fractions,
    make_profiles,
)

if TYPE_CHECKING:
    from flmi.config import Config

MIN_IMAGE_SIZE = 16
MAX_LESION_CLASSES = 8
# A patient with lesions has 1 .. MAX_LESIONS of them.
MAX_LESIONS = 3
_EXTRA_LESION_P = 0.35

# Per-hospital typical lesion radius, as a fraction of the image side; each lesion's
# semi-axes are that radius times a draw from _AXIS_JITTER.
_LESION_RADIUS = (0.1, 0.17)
_AXIS_JITTER = (0.75, 1.3)
_LESION_CONTRAST = (0.22, 0.45)
_LESION_EDGE_SHARPNESS = 6.0

_TISSUE_MEAN = 0.45
_TISSUE_FINE_STD = 0.035
_TISSUE_COARSE_STD = 0.05
_TISSUE_FINE_SIGMA = 1.0
_TISSUE_COARSE_SIGMA = 3.0


@dataclass(frozen=True)
class LesionHospital:
    """One hospital of the segmentation data: its scanner and patients, and its lesion size.

    Parameters
    ----------
    scanner
        Size, lesion prevalence and scanner settings, as for classification.
    lesion_radius_px
        Typical lesion semi-axis in pixels (voxels in 3D).
    """

    scanner: HospitalProfile
    lesion_radius_px: float

    @property
    def name(self) -> str:
        """The hospital's site name."""
        return self.scanner.name


def make_lesion_hospitals(
    *, num_sites: int, seed: int, n_patients_total: int, image_size: int
) -> list[LesionHospital]:
    """Draw ``num_sites`` hospitals of unequal size, prevalence, scanner and lesion size.

    Parameters
    ----------
    num_sites
        Number of hospitals, 2 to 16.
    seed
        Seed of the draw; the same seed gives the same hospitals.
    n_patients_total
        Patients over all hospitals (the smallest hospital gets at least 20).
    image_size
        Side of the images, which sets the lesion sizes.

    Returns
    -------
    list[LesionHospital]
        Hospitals named ``"hospital_1"`` .. ``"hospital_N"``, largest first.
    """
    profiles = make_profiles(num_sites=num_sites, seed=seed, n_patients_total=n_patients_total)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E51]))
    strata = (rng.permutation(num_sites) + rng.uniform(0.15, 0.85, num_sites)) / num_sites
    low, high = _LESION_RADIUS
    radii = (low + (high - low) * strata) * image_size
    return [
        LesionHospital(scanner=p, lesion_radius_px=round(float(r), 4))
        for p, r in zip(profiles, radii, strict=True)
    ]


def generate_lesion_hospitals(
    *,
    hospitals: Sequence[LesionHospital],
    seed: int,
    image_size: int,
    spatial_dims: int,
    lesion_classes: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> FederatedData:
    """Generate every hospital's images, masks and train/val/test splits.

    Parameters
    ----------
    hospitals
        The hospitals, e.g. from :func:`make_lesion_hospitals`. Names must be unique.
    seed
        Seed; each hospital draws from its own generator seeded by
        ``(seed, its position in hospitals)``.
    image_size
        Side ``S`` of the square images or cubic volumes, at least 16.
    spatial_dims
        2 (images ``S x S``) or 3 (volumes ``S x S x S``).
    lesion_classes
        Number of lesion classes (mask values ``1 .. lesion_classes``), 1 to 8.
    val_fraction, test_fraction
        Fractions of each hospital's patients, stratified by lesion present
        or not, put in its validation and test splits.

    Returns
    -------
    FederatedData
        Per hospital, float32 images ``(N, 1, *spatial)`` in ``[0, 1]`` and
        int64 masks ``(N, *spatial)``; ``central_test`` is the concatenation of
        the hospitals' test splits in sorted site order.

    Raises
    ------
    ConfigError
        An argument the generator cannot use; the message names it.
    """
    _check_args(
        hospitals=hospitals,
        image_size=image_size,
        spatial_dims=spatial_dims,
        lesion_classes=lesion_classes,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    sites: dict[str, SiteSplits] = {}
    shape = (image_size,) * spatial_dims
    for position, hospital in enumerate(hospitals):
        rng = np.random.default_rng(np.random.SeedSequence([seed, position, 0x5E6]))
        profile = hospital.scanner
        n = profile.n_patients
        n_pos = min(max(round(n * profile.prevalence), 1), n - 1)
        has_lesion = rng.permutation(np.arange(n) < n_pos)
        x, masks = _draw_cases(
            rng=rng,
            has_lesion=has_lesion,
            shape=shape,
            radius_px=hospital.lesion_radius_px,
            lesion_classes=lesion_classes,
        )
        x = _scanner(rng=rng, x=x, profile=profile)
        train_idx, val_idx, test_idx = _stratified_split(
            rng=rng,
            y=has_lesion.astype(np.int64),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
        images = x[:, np.newaxis]
        sites[hospital.name] = SiteSplits(
            train=ArraySplit(x=images[train_idx], y=masks[train_idx]),
            val=ArraySplit(x=images[val_idx], y=masks[val_idx]),
            test=ArraySplit(x=images[test_idx], y=masks[test_idx]),
        )
    central_test = concat_splits([sites[name].test for name in sorted(sites)])
    return FederatedData(sites=sites, central_test=central_test)


def lesion_present(masks: np.ndarray) -> np.ndarray:
    """Binary labels ``(N,)``: 1 where the mask holds any lesion."""
    return np.asarray(masks.reshape(masks.shape[0], -1).max(axis=1) > 0, dtype=np.int64)


def lesion_classes_present(masks: np.ndarray, *, lesion_classes: int) -> np.ndarray:
    """Multi-label targets ``(N, lesion_classes)``: column ``k`` is 1 where class ``k + 1`` is."""
    flat = masks.reshape(masks.shape[0], -1)
    columns = [(flat == k).any(axis=1) for k in range(1, lesion_classes + 1)]
    return np.stack(columns, axis=1).astype(np.int64)


def relabel(data: FederatedData, *, labels: str, lesion_classes: int) -> FederatedData:
    """The same images with classification targets instead of masks.

    Parameters
    ----------
    data
        Generated data with masks.
    labels
        ``"present"`` (lesion present or not) or ``"classes"`` (which lesion
        classes are present: multi-label).
    lesion_classes
        Number of lesion classes in the masks.
    """

    def convert(split: ArraySplit) -> ArraySplit:
        if labels == "present":
            return ArraySplit(x=split.x, y=lesion_present(split.y))
        present = lesion_classes_present(split.y, lesion_classes=lesion_classes)
        return ArraySplit(x=split.x, y=present)

    if labels not in ("present", "classes"):
        raise ValueError(f"labels must be 'present' or 'classes', got '{labels}'")
    sites = {
        name: SiteSplits(train=convert(s.train), val=convert(s.val), test=convert(s.test))
        for name, s in data.sites.items()
    }
    central = concat_splits([sites[name].test for name in sorted(sites)])
    return FederatedData(sites=sites, central_test=central)


def _check_args(
    *,
    hospitals: Sequence[LesionHospital],
    image_size: int,
    spatial_dims: int,
    lesion_classes: int,
    val_fraction: float,
    test_fraction: float,
) -> None:
    check_profiles([h.scanner for h in hospitals])
    for h in hospitals:
        if not h.lesion_radius_px > 0:
            raise ConfigError(
                f"synthetic hospital '{h.name}': lesion_radius_px = {h.lesion_radius_px} "
                "must be positive"
            )
    if spatial_dims not in (2, 3):
        raise ConfigError(f"data.spatial_dims must be 2 or 3, got {spatial_dims}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"data.image_size = {image_size} is below {MIN_IMAGE_SIZE} for generated lesions; "
            f"use at least {MIN_IMAGE_SIZE}"
        )
    if not 1 <= lesion_classes <= MAX_LESION_CLASSES:
        raise ConfigError(
            f"lesion_classes = {lesion_classes}: the generator makes 1..{MAX_LESION_CLASSES} "
            "lesion classes; for segmentation set task.num_classes to lesion classes + 1 "
            "(background), for multi-label classification to the number of lesion classes"
        )
    check_split_fractions(val_fraction=val_fraction, test_fraction=test_fraction)


def _draw_cases(
    *,
    rng: np.random.Generator,
    has_lesion: np.ndarray,
    shape: tuple[int, ...],
    radius_px: float,
    lesion_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue plus lesions (before the scanner), and the masks."""
    n, dims = has_lesion.shape[0], len(shape)
    x = _tissue(rng=rng, n=n, shape=shape)
    masks = np.zeros((n, *shape), dtype=np.int64)
    extra = rng.binomial(MAX_LESIONS - 1, _EXTRA_LESION_P, size=n)
    count = np.where(has_lesion, 1 + extra, 0)
    grids = [np.arange(s, dtype=np.float32) for s in shape]
    for slot in range(MAX_LESIONS):
        active = count > slot
        semi = radius_px * rng.uniform(*_AXIS_JITTER, size=(n, dims))
        margin = semi.max(axis=1, keepdims=True)
        centre = rng.uniform(margin, np.array(shape, dtype=np.float64) - 1 - margin)
        rotation = _random_rotations(rng=rng, n=n, dims=dims)
        klass = np.asarray(rng.integers(1, lesion_classes + 1, size=n))
        contrast = rng.uniform(*_LESION_CONTRAST, size=n) * _class_sign(klass)
        index = np.flatnonzero(active)
        if index.size == 0:
            continue
        # Coordinates of every pixel in each lesion's own frame, scaled by its semi-axes.
        radius_sq = np.zeros((index.size, *shape), dtype=np.float32)
        for axis in range(dims):
            u = np.zeros((index.size, *shape), dtype=np.float32)
            for src in range(dims):
                offset = grids[src] - centre[index, src, None].astype(np.float32)
                view = [index.size] + [1] * dims
                view[1 + src] = shape[src]
                weight = rotation[index, axis, src].astype(np.float32)[:, None]
                u += (weight * offset).reshape(view)
            u /= semi[index, axis].astype(np.float32).reshape([-1] + [1] * dims)
            radius_sq += u * u
        radius = np.sqrt(radius_sq)
        edge = np.minimum(np.float32(_LESION_EDGE_SHARPNESS) * (radius - 1.0), np.float32(50.0))
        soft = 1.0 / (1.0 + np.exp(edge))
        x[index] += soft * contrast[index].astype(np.float32).reshape([-1] + [1] * dims)
        inside = radius <= 1.0
        masks[index] = np.where(inside, klass[index].reshape([-1] + [1] * dims), masks[index])
    return x, masks


def _class_sign(klass: np.ndarray) -> np.ndarray:
    """Brightness factor of each lesion class: +1, -1, +1.5, -1.5, +2, ..."""
    magnitude = 1.0 + 0.5 * ((klass - 1) // 2)
    return np.where(klass % 2 == 1, magnitude, -magnitude)


def _random_rotations(*, rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """``n`` random rotation matrices ``(n, dims, dims)``."""
    if dims == 2:
        angle = rng.uniform(0.0, np.pi, size=n)
        cos, sin = np.cos(angle), np.sin(angle)
        return np.stack([np.stack([cos, sin], axis=1), np.stack([-sin, cos], axis=1)], axis=1)
    q, r = np.linalg.qr(rng.standard_normal((n, dims, dims)))
    signs = np.sign(np.diagonal(r, axis1=1, axis2=2))
    signs[signs == 0] = 1.0
    return np.asarray(q * signs[:, None, :])


def _tissue(*, rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random texture: a fine and a coarse band of blurred noise."""
    fine = _blur(rng.standard_normal((n, *shape), dtype=np.float32), sigma=_TISSUE_FINE_SIGMA)
    coarse = _blur(rng.standard_normal((n, *shape), dtype=np.float32), sigma=_TISSUE_COARSE_SIGMA)
    fine *= np.float32(_TISSUE_FINE_STD / max(float(fine.std()), 1e-6))
    coarse *= np.float32(_TISSUE_COARSE_STD / max(float(coarse.std()), 1e-6))
    fine += coarse
    fine += np.float32(_TISSUE_MEAN)
    return fine


def _blur(x: np.ndarray, *, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a stack ``(N, *spatial)`` along every spatial axis."""
    for axis in range(1, x.ndim):
        matrix = _blur_matrix(size=x.shape[axis], sigma=sigma)
        moved = np.moveaxis(x, axis, -1) @ matrix.T
        x = np.moveaxis(moved, -1, axis)
    return np.ascontiguousarray(x, dtype=np.float32)


def _scanner(*, rng: np.random.Generator, x: np.ndarray, profile: HospitalProfile) -> np.ndarray:
    """Blur, bias field, contrast curve, scale and offset, noise; clipped to ``[0, 1]``."""
    n, shape = x.shape[0], x.shape[1:]
    dims = len(shape)
    if profile.blur_sigma > 0:
        x = _blur(x, sigma=profile.blur_sigma)
    # Bias field: a linear gradient of random direction, 1 +- bias_field at the farthest corner.
    direction = rng.standard_normal((n, dims))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    field = np.zeros(x.shape, dtype=np.float32)
    for axis in range(dims):
        coords = np.linspace(-1.0, 1.0, shape[axis], dtype=np.float32)
        view = [n] + [1] * dims
        view[1 + axis] = shape[axis]
        field += (direction[:, axis, None].astype(np.float32) * coords).reshape(view)
    field *= np.float32(profile.bias_field / np.sqrt(dims))
    field += np.float32(1.0)
    x = x * field
    np.clip(x, 0.0, 1.0, out=x)
    np.power(x, np.float32(profile.gamma), out=x)
    x *= np.float32(profile.intensity_scale)
    x += np.float32(profile.intensity_offset)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(profile.noise_std)
    np.clip(x, 0.0, 1.0, out=x)
    return np.asarray(x, dtype=np.float32)


def lesion_data(config: Config, *, seed: int) -> FederatedData:
    """The generated lesion hospitals a config asks for, with the targets its task needs.

    Segmentation gets masks with ``num_classes - 1`` lesion classes;
    multi-label classification gets one label per lesion class
    (``num_classes`` of them); plain classification gets lesion present or not.
    """
    d, t = config.data, config.task
    if t.name == "segmentation":
        lesion_classes, labels = t.num_classes - 1, None
    elif t.multi_label:
        lesion_classes, labels = t.num_classes, "classes"
    else:
        lesion_classes, labels = 1, "present"
    hospitals = make_lesion_hospitals(
        num_sites=config.partition.num_sites,
        seed=seed,
        n_patients_total=d.n_patients,
        image_size=d.image_size,
    )
    data = generate_lesion_hospitals(
        hospitals=hospitals,
        seed=seed,
        image_size=d.image_size,
        spatial_dims=d.spatial_dims,
        lesion_classes=lesion_classes,
    )
    if labels is None:
        return data
    return relabel(data, labels=labels, lesion_classes=lesion_classes)
