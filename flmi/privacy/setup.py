"""Build the configured aggregation protocol: the server side and the sites' wrappers.

``cryptography`` and ``tenseal`` (the ``privacy`` extra) are imported only when
``privacy.aggregation`` asks for them, so a plain run needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flmi.config import PrivacyConfig
from flmi.core.errors import ConfigError
from flmi.core.exchange import SecureAggregation
from flmi.privacy.linear import Aggregation, LinearRule, linear_rule
from flmi.runtime.inprocess import SiteEndpoint

if TYPE_CHECKING:
    from flmi.privacy.he import CkksSettings


def key_holder(privacy: PrivacyConfig, site_names: Sequence[str]) -> str:
    """The homomorphic key holder: ``privacy.he_key_holder``, or the first site by name."""
    names = sorted(site_names)
    if not privacy.he_key_holder:
        return names[0]
    if privacy.he_key_holder not in names:
        raise ConfigError(
            f"privacy.he_key_holder = '{privacy.he_key_holder}' is not a site; "
            f"the sites are {', '.join(names)}"
        )
    return privacy.he_key_holder


def build_secure(
    privacy: PrivacyConfig, *, strategy: str, site_names: Sequence[str]
) -> SecureAggregation | None:
    """The server side of ``privacy.aggregation`` (``None`` for plain aggregation)."""
    if privacy.aggregation == Aggregation.PLAIN.value:
        return None
    rule = linear_rule(strategy, aggregation=privacy.aggregation)
    if privacy.dp == "client":
        # DP-FedAvg's noise is calibrated to a sum in which every site counts once.
        rule = LinearRule.UNWEIGHTED_MEAN
    if privacy.aggregation == Aggregation.SECAGG.value:
        from flmi.privacy.secagg import FixedPoint, SecAggServer

        return SecAggServer(
            threshold=privacy.secagg_threshold,
            fixed=FixedPoint(clip=privacy.secagg_clip, bits=privacy.secagg_bits),
            rule=rule,
        )
    from flmi.privacy.he import HEServer

    return HEServer(
        key_holder=key_holder(privacy, site_names),
        rule=rule,
        settings=ckks_settings(privacy),
    )


def ckks_settings(privacy: PrivacyConfig) -> CkksSettings:
    """The CKKS parameters of ``[privacy]``."""
    from flmi.privacy.he import CkksSettings

    return CkksSettings(
        poly_modulus_degree=privacy.he_poly_modulus_degree, scale_bits=privacy.he_scale_bits
    )


def protect_sites(privacy: PrivacyConfig, sites: Sequence[SiteEndpoint]) -> list[SiteEndpoint]:
    """Wrap every site so its update leaves only masked or encrypted (unchanged for plain)."""
    if privacy.aggregation == Aggregation.PLAIN.value:
        return list(sites)
    from flmi.privacy.site import SecureSite

    settings = ckks_settings(privacy) if privacy.aggregation == Aggregation.HE.value else None
    return [SecureSite(site=site, ckks=settings) for site in sites]
