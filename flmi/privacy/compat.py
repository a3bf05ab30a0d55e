"""Which strategies each kind of differential privacy can run with, and why not the others.

Plain Python, so the config can check a run before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Strategies DP-SGD (``privacy.dp = "sample"``) refuses, each with the reason.
SAMPLE_DP_REFUSED: Mapping[str, str] = {
    "fedbn": (
        "FedBN exists to keep batch-normalisation statistics at each site, and BatchNorm mixes "
        "the examples of a batch, so DP-SGD's per-example gradients (and its guarantee) do not "
        "exist for it; use a GroupNorm model with fedavg, fedavgm or fedadam"
    ),
    "fedpxn": (
        "FedPxN keeps batch-normalisation layers at each site, and BatchNorm mixes the examples "
        "of a batch, so DP-SGD's per-example gradients (and its guarantee) do not exist for it; "
        "use a GroupNorm model with fedavg, fedavgm or fedadam"
    ),
    "fedprox": (
        "DP-SGD replaces each gradient by its clipped, noised per-example sum, which drops "
        "FedProx's proximal term; use fedavg (or client-level DP, privacy.dp = 'client')"
    ),
    "ditto": (
        "DP-SGD replaces each gradient by its clipped, noised per-example sum, which drops "
        "Ditto's proximal pull; use fedavg or finetune"
    ),
    "scaffold": (
        "SCAFFOLD's gradient correction is overwritten by DP-SGD's noised gradient; use fedavg, "
        "fedavgm or fedadam"
    ),
    "fednorm": (
        "FedNorm scores each site with its modality group's normalisation layers, which "
        "flmi's DP-SGD wrapper does not pass on; use fedavg, or cusfl for a private head"
    ),
    "ifca": (
        "IFCA picks a cluster by each site's training loss, a choice DP-SGD does not privatise; "
        "use fedavg"
    ),
}

#: Strategies DP-FedAvg (``privacy.dp = "client"``) can wrap: a mean of updates and a server rule.
CLIENT_DP_STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "finetune",
)


def client_dp_refusal(strategy: str) -> str | None:
    """Why ``strategy`` cannot run under client-level DP (``None``: it can)."""
    if strategy in CLIENT_DP_STRATEGIES:
        return None
    return (
        f"privacy.dp = 'client' clips each site's update and adds noise to their sum, which "
        f"only calibrates for an unweighted mean of updates followed by a server rule; "
        f"strategy '{strategy}' aggregates otherwise (or sends tensors the clip does not "
        f"bound). Use one of {', '.join(CLIENT_DP_STRATEGIES)}"
    )


#: Standard deviations of a site's noise share that secure aggregation's fixed-point
#: range must hold beyond the clip: a value outside makes the site refuse the round
#: (``update_out_of_range``), which at 7 happens about once in 4e11 values.
NOISE_RANGE_SIGMAS = 7.0

#: Why DP-FedAvg with noise added at the server cannot run on a hidden sum.
SERVER_NOISE_REFUSAL = (
    "DP-FedAvg with privacy.noise_at = 'server' clips each site's update at the server "
    "(and, with adaptive clipping, counts which were clipped), which a masked or encrypted "
    "sum hides; set privacy.noise_at = 'site': each site clips its own update and adds its "
    "share of the noise before masking or encrypting"
)


def secagg_noise_room(
    *,
    secagg_clip: float,
    clip_norm: float,
    update_noise_multiplier: float,
    count_noise: float | None,
    sites: int,
) -> str | None:
    """Why a site's clipped, noised change may not fit ``privacy.secagg_clip`` (``None``: it fits).

    Each value of a clipped change lies within ``clip_norm``; the site adds
    N(0, (z_u clip_norm)^2 / sites) to it, and, with adaptive clipping,
    N(0, count_noise^2 / sites) to its 0/1 "not clipped" bit. Both must stay
    within ``secagg_clip`` up to :data:`NOISE_RANGE_SIGMAS` of that noise.
    """
    share = math.sqrt(sites)
    k = NOISE_RANGE_SIGMAS
    need = clip_norm * (1.0 + k * update_noise_multiplier / share)
    if count_noise is not None:
        need = max(need, 1.0 + k * count_noise / share)
    if secagg_clip >= need:
        return None
    return (
        f"privacy.secagg_clip = {secagg_clip:g} cannot hold a site's clipped, noised change: "
        f"each value lies within privacy.clip_norm ({clip_norm:g}) plus {k:g} standard "
        f"deviations of the site's noise share (noise multiplier {update_noise_multiplier:.3g} "
        f"x clip_norm / sqrt({sites} sites))"
        + (
            f", and the noised clipped-count bit within 1 + {k:g} x "
            f"privacy.adaptive_clip_count_noise / sqrt({sites})"
            if count_noise is not None
            else ""
        )
        + f"; raise privacy.secagg_clip to at least {need:.4g} or lower privacy.clip_norm"
    )


def secagg_max_clip(*, secagg_clip: float, update_noise_multiplier: float, sites: int) -> float:
    """The largest clip whose noised values :func:`secagg_noise_room` accepts."""
    return secagg_clip / (1.0 + NOISE_RANGE_SIGMAS * update_noise_multiplier / math.sqrt(sites))
