"""DP-FedAvg at a site that does not trust the server: clip its own update, add its noise share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flmi.core.keys import DPMode, Extra, HParam
from flmi.core.messages import HParamValue
from flmi.core.params import Params
from flmi.privacy.clip import clip_to_norm, gaussian_noise
from flmi.tasks.base import HParamError


@dataclass(frozen=True)
class SiteNoise:
    """One site's share of DP-FedAvg's noise.

    Parameters
    ----------
    clip_norm
        The bound the site clips its update (a delta) to.
    noise_multiplier
        The update's noise multiplier ``z``: the sum over ``num_sites`` sites
        carries N(0, (z C)^2), so each site adds N(0, (z C)^2 / num_sites).
    num_sites
        Sites expected this round.
    count_noise
        With adaptive clipping, the noise std of the count of unclipped
        updates (each site adds its share to its own bit); 0 without.
    """

    clip_norm: float
    noise_multiplier: float
    num_sites: int
    count_noise: float = 0.0

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, HParamValue]) -> SiteNoise | None:
        """The settings if the instruction asks the site to noise its own update."""
        if str(hparams.get(HParam.DP, DPMode.NONE)) != DPMode.CLIENT:
            return None
        try:
            out = cls(
                clip_norm=float(hparams[HParam.DP_CLIP_NORM]),
                noise_multiplier=float(hparams[HParam.DP_NOISE_MULTIPLIER]),
                num_sites=int(hparams[HParam.DP_NUM_SITES]),
                count_noise=float(hparams.get(HParam.DP_COUNT_NOISE, 0.0)),
            )
        except KeyError as exc:
            raise HParamError(f"client-level DP hyperparameter {exc.args[0]!r} missing") from None
        except (TypeError, ValueError) as exc:
            raise HParamError(f"client-level DP hyperparameter has the wrong type: {exc}") from None
        if not (out.clip_norm > 0 and out.noise_multiplier > 0 and out.num_sites >= 1):
            raise HParamError(
                "client-level DP needs a positive dp_clip_norm and dp_noise_multiplier, "
                "and dp_num_sites of at least 1"
            )
        if out.count_noise < 0:
            raise HParamError(f"dp_count_noise must not be negative, got {out.count_noise}")
        return out

    def apply(self, delta: Params, *, rng: np.random.Generator) -> tuple[Params, Params]:
        """The clipped, noised delta, and the extras (the noised 'was not clipped' bit)."""
        clipped, norm = clip_to_norm(delta, self.clip_norm)
        share = math.sqrt(self.num_sites)
        noise = gaussian_noise(clipped, std=self.noise_multiplier * self.clip_norm / share, rng=rng)
        noised = {
            k: (clipped[k].astype(np.float64) + noise[k]).astype(delta[k].dtype, copy=False)
            for k in sorted(clipped)
        }
        bit = 1.0 if norm <= self.clip_norm else 0.0
        if self.count_noise > 0:
            bit += float(rng.normal(0.0, self.count_noise / share))
        return noised, {Extra.DP_UNCLIPPED.value: np.array([bit], dtype=np.float64)}
