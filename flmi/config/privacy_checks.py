"""``[privacy]`` checks across tables: the strategy, the sites sampled, the DP mechanism.

The privacy table's own ranges are checked when it is made
(:class:`flmi.config.schema.PrivacyConfig`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flmi.core.errors import ConfigError
from flmi.privacy.clip import update_noise_multiplier
from flmi.privacy.compat import (
    SAMPLE_DP_REFUSED,
    SERVER_NOISE_REFUSAL,
    client_dp_refusal,
    secagg_noise_room,
)
from flmi.privacy.linear import linear_rule

if TYPE_CHECKING:
    from flmi.config.schema import Config


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _sampled(c: Config) -> int:
    """The sites sampled each round: ``federation.fraction`` of them, at least ``min_sites``."""
    f, n = c.federation, c.partition.num_sites
    return min(n, max(f.min_sites, math.ceil(f.fraction * n)))


def check_privacy(c: Config) -> None:
    """``[privacy]``: a secure or homomorphic sum needs a linear strategy and sound settings."""
    v = c.privacy
    if v.aggregation == "plain":
        return
    linear_rule(c.strategy.name, aggregation=v.aggregation)
    n = c.partition.num_sites
    _require(n >= 2, f"privacy.aggregation = '{v.aggregation}' needs at least 2 sites")
    sampled = _sampled(c)
    t = v.secagg_threshold
    _require(
        t == 0 or sampled // 2 < t <= sampled,
        f"privacy.secagg_threshold = {t} must exceed half of the {sampled} sites sampled "
        f"each round and not exceed them (choose {sampled // 2 + 1}..{sampled}, or 0 for "
        "a strict majority)",
    )
    h = v.he_min_contributions
    _require(
        h == 0 or 2 <= h <= sampled,
        f"privacy.he_min_contributions = {h} must be 2..{sampled} (the sites sampled each "
        "round), or 0 for a strict majority of them",
    )


def check_dp(c: Config) -> None:
    """``[privacy]`` DP: whether the strategy and the aggregation can run under the chosen DP."""
    v = c.privacy
    name = c.strategy.name
    _require(
        v.dp != "client" or v.aggregation == "plain" or v.noise_at == "site",
        f"privacy.dp = 'client' with privacy.aggregation = '{v.aggregation}': "
        + SERVER_NOISE_REFUSAL,
    )
    if v.dp == "sample":
        reason = SAMPLE_DP_REFUSED.get(name)
        _require(reason is None, f"privacy.dp = 'sample' with strategy '{name}': {reason}")
    if v.dp == "client":
        refusal = client_dp_refusal(name)
        _require(refusal is None, f"strategy.name = '{name}': {refusal}")
        _require(
            not v.adaptive_clip
            or v.target_epsilon is not None
            or v.noise_multiplier < 2 * v.adaptive_clip_count_noise,
            "privacy.adaptive_clip: the noise on the count of clipped updates takes part of the "
            f"privacy budget, so privacy.noise_multiplier ({v.noise_multiplier}) must be below "
            f"2 * privacy.adaptive_clip_count_noise ({2 * v.adaptive_clip_count_noise}); "
            "raise adaptive_clip_count_noise or lower noise_multiplier",
        )
        if v.aggregation == "secagg" and v.target_epsilon is None:
            _check_secagg_noise_room(c)


def _check_secagg_noise_room(c: Config) -> None:
    """DP-FedAvg's noised changes fit secure aggregation's fixed-point range (fixed noise)."""
    v = c.privacy
    count_noise = v.adaptive_clip_count_noise if v.adaptive_clip else None
    problem = secagg_noise_room(
        secagg_clip=v.secagg_clip,
        clip_norm=v.clip_norm,
        update_noise_multiplier=update_noise_multiplier(
            noise_multiplier=v.noise_multiplier, count_noise=count_noise
        ),
        count_noise=count_noise,
        sites=_sampled(c),
    )
    _require(problem is None, str(problem))
