"""The image pipeline ``[data.transforms]`` sets, built from MONAI's transforms.

Order: channels first (``EnsureChannelFirst``), a 2D image made a one-slice
volume when the pipeline is 3D, ``Orientation``, ``Spacing``, channel
handling (average to grey, or ``RepeatChannel`` to RGB), intensity
(``ScaleIntensity`` to ``[0, 1]``, ``NormalizeIntensity`` (z-score) or a CT
window with ``ScaleIntensityRange``, clipped), then ``Resize`` (area averaging
along axes that shrink, linear interpolation along axes that grow). A mask goes
through the same spatial steps with nearest-neighbour interpolation and keeps
its label values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flmi.core.errors import DataError

if TYPE_CHECKING:
    from flmi.config import TransformsConfig

_IMAGE_DIMS = 2
_VOLUME_DIMS = 3


class ImagePipeline:
    """Turn a MONAI-read image (or mask) into a channels-first numpy array.

    Parameters
    ----------
    spec
        The ``[data.transforms]`` settings.
    mask
        Whether the inputs are label masks: nearest-neighbour resampling, no
        intensity step, one channel, integer output.
    """

    def __init__(self, *, spec: TransformsConfig, mask: bool = False) -> None:
        from monai.transforms.intensity.array import (
            NormalizeIntensity,
            ScaleIntensity,
            ScaleIntensityRange,
        )
        from monai.transforms.spatial.array import Orientation, Spacing
        from monai.transforms.utility.array import EnsureChannelFirst

        self.spec, self.mask = spec, mask
        self.spatial_dims: int | None = len(spec.spatial_size or spec.spacing) or None
        self._channel_first = EnsureChannelFirst()
        self._orientation = (
            Orientation(axcodes=spec.orientation.upper(), labels=None) if spec.orientation else None
        )
        self._spacing = (
            Spacing(pixdim=tuple(spec.spacing), mode="nearest" if mask else "bilinear")
            if spec.spacing
            else None
        )
        self._intensity: Any = None
        if not mask:
            if spec.intensity == "window":
                low = spec.window_center - spec.window_width / 2.0
                high = spec.window_center + spec.window_width / 2.0
                self._intensity = ScaleIntensityRange(
                    a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True
                )
            elif spec.intensity == "minmax":
                self._intensity = ScaleIntensity(minv=0.0, maxv=1.0)
            elif spec.intensity == "zscore":
                self._intensity = NormalizeIntensity()
        self._size = tuple(spec.spatial_size)

    def __call__(self, image: Any, *, where: str) -> np.ndarray:
        """Apply the pipeline to one image read by :func:`flmi.data.readers.read_image`.

        Parameters
        ----------
        image
            The MONAI ``MetaTensor`` as read (spatial axes first).
        where
            What the image is, for error messages (kept at the site).

        Returns
        -------
        np.ndarray
            float32 ``(C, *spatial)`` for images; int64 ``(1, *spatial)`` for masks.

        Raises
        ------
        DataError
            The image's dimensions do not fit the pipeline (a volume in a 2D
            pipeline, orientation asked of a 2D image) or a mask has several
            channels; the message names the setting to change.
        """
        x = self._channel_first(image)
        spatial = x.ndim - 1
        if self.spatial_dims == _VOLUME_DIMS and spatial == _IMAGE_DIMS:
            x = _one_slice_volume(x)
        elif self.spatial_dims == _IMAGE_DIMS and spatial == _VOLUME_DIMS:
            raise DataError(
                f"{where}: a 3D volume of shape {tuple(x.shape[1:])}, but data.transforms "
                "spatial_size/spacing have 2 values; give them 3 values for volumes"
            )
        elif spatial not in (_IMAGE_DIMS, _VOLUME_DIMS):
            raise DataError(f"{where}: {spatial} spatial axes; flmi reads 2D images and 3D volumes")
        if self._orientation is not None:
            if x.ndim - 1 != _VOLUME_DIMS:
                raise DataError(
                    f"{where}: data.transforms.orientation applies to volumes, but this is a "
                    "2D image; give spatial_size 3 values or leave orientation out"
                )
            x = self._orientation(x)
        if self._spacing is not None:
            x = self._spacing(x)
        x = self._channels(x, where=where)
        if self._intensity is not None:
            x = self._intensity(x)
        if self._size:
            x = self._resized(x)
        array: np.ndarray = torch.as_tensor(x).detach().cpu().numpy()
        if self.mask:
            labels: np.ndarray = np.rint(array).astype(np.int64)
            return labels
        return np.ascontiguousarray(array, dtype=np.float32)

    def _resized(self, x: Any) -> Any:
        """Resize to ``spatial_size``: area averaging along shrinking axes, then linear growth.

        Area averaging is exact anti-aliasing for shrinking (no dark borders, as
        Gaussian smoothing with zero padding gives); axes that grow are then
        interpolated linearly. Masks use nearest neighbours throughout.
        """
        from monai.transforms.spatial.array import Resize

        if self.mask:
            return Resize(spatial_size=self._size, mode="nearest")(x)
        have = tuple(int(v) for v in x.shape[1:])
        shrunk = tuple(min(h, w) for h, w in zip(have, self._size, strict=True))
        if shrunk != have:
            x = Resize(spatial_size=shrunk, mode="area")(x)
        if shrunk != self._size:
            linear = "bilinear" if len(self._size) == _IMAGE_DIMS else "trilinear"
            x = Resize(spatial_size=self._size, mode=linear, align_corners=True)(x)
        return x

    def _channels(self, x: Any, *, where: str) -> Any:
        from monai.transforms.utility.array import RepeatChannel

        have = int(x.shape[0])
        if self.mask:
            if have != 1:
                raise DataError(f"{where}: a mask must have one channel, this one has {have}")
            return x
        want = self.spec.channels
        if want in (0, have):
            return x
        if want == 1:
            return x.mean(dim=0, keepdim=True)
        if have == 1:
            return RepeatChannel(repeats=want)(x)
        raise DataError(
            f"{where}: has {have} channels, which cannot become data.transforms.channels = "
            f"{want}; set channels = 1 (average) or 0 (keep)"
        )


def _one_slice_volume(x: Any) -> Any:
    """A 2D image as a volume of one slice, its slice axis normal to the image plane.

    MONAI gives a single 2D slice a slice axis of ``(0, 0, 1)`` whatever the
    plane; for a sagittal or coronal slice that axis lies in the plane itself
    and no orientation can be derived. The normal (the cross product of the
    row and column axes) is the slice axis DICOM defines.
    """
    volume = x.unsqueeze(-1)
    affine = volume.affine.clone()
    normal = torch.linalg.cross(affine[:3, 0], affine[:3, 1])
    length = torch.linalg.norm(normal)
    if float(length) > 0:
        thickness = torch.linalg.norm(affine[:3, 2])
        affine[:3, 2] = normal / length * (thickness if float(thickness) > 0 else 1.0)
        volume.affine = affine
    return volume
