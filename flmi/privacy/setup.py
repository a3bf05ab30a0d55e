"""Build the configured aggregation protocol: the server side and the sites' wrappers.

``cryptography`` and ``tenseal`` (the ``privacy`` extra) are imported only when
``privacy.aggregation`` asks for them, so a plain run needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flmi.config import FederationConfig, PrivacyConfig
from flmi.core.errors import ConfigError
from flmi.core.exchange import SecureAggregation
from flmi.privacy.linear import Aggregation, LinearRule, linear_rule
from flmi.runtime.inprocess import SiteEndpoint

if TYPE_CHECKING:
    from flmi.privacy.he import CkksSettings
    from flmi.privacy.he_sums import HETrust
    from flmi.privacy.identity import Authority, SiteCredential


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


def he_min_contributions(
    privacy: PrivacyConfig, federation: FederationConfig, *, num_sites: int
) -> int:
    """``t``: ``privacy.he_min_contributions``, or a strict majority of the sites sampled a round.

    Never below 2: a "sum" of one update is that update.
    """
    if privacy.he_min_contributions:
        return privacy.he_min_contributions
    f = federation
    sampled = min(num_sites, max(f.min_sites, math.ceil(f.fraction * num_sites)))
    return max(2, sampled // 2 + 1)


def he_trust(
    privacy: PrivacyConfig,
    federation: FederationConfig,
    *,
    site_names: Sequence[str],
    credential: SiteCredential,
    authority: Authority,
) -> HETrust:
    """What a site believes under ``he``, from its own copy of the federation config."""
    from flmi.privacy.he_sums import HETrust

    return HETrust(
        credential=credential,
        authority=authority,
        key_holder=key_holder(privacy, site_names),
        min_contributions=he_min_contributions(privacy, federation, num_sites=len(site_names)),
    )


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


def protect_sites(
    privacy: PrivacyConfig, sites: Sequence[SiteEndpoint], *, federation: FederationConfig
) -> list[SiteEndpoint]:
    """Wrap every site so its update leaves only masked or encrypted (unchanged for plain).

    Under ``he`` each site gets a certificate from a CA made for this
    simulation alone (:func:`he_sites`).
    """
    if privacy.aggregation == Aggregation.PLAIN.value:
        return list(sites)
    from flmi.privacy.site import SecureSite

    if privacy.aggregation != Aggregation.HE.value:
        return [SecureSite(site=site) for site in sites]
    names = [site.name for site in sites]
    return he_sites(
        sites,
        key_holder=key_holder(privacy, names),
        min_contributions=he_min_contributions(privacy, federation, num_sites=len(names)),
        settings=ckks_settings(privacy),
    )


def he_sites(
    sites: Sequence[SiteEndpoint],
    *,
    key_holder: str,
    min_contributions: int,
    settings: CkksSettings | None = None,
) -> list[SiteEndpoint]:
    """Sites under homomorphic aggregation, each with a certificate from a throwaway CA.

    A CA is made for these sites alone and its key dropped at once, as a
    deployment's sites hold their mutual-TLS certificates: nothing else can
    then sign for a site.
    """
    from flmi.privacy.he_sums import HETrust
    from flmi.privacy.identity import simulated_consortium
    from flmi.privacy.site import SecureSite

    authority, credentials = simulated_consortium(sorted(site.name for site in sites))
    return [
        SecureSite(
            site=site,
            ckks=settings,
            he_trust=HETrust(
                credential=credentials[site.name],
                authority=authority,
                key_holder=key_holder,
                min_contributions=min_contributions,
            ),
        )
        for site in sites
    ]
