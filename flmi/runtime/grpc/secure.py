"""Secure and homomorphic aggregation over gRPC: the plan a site is shown, and its wrapper.

The server tells each site at register how its update must leave
(:class:`AggregationPlan`, part of the training plan). Under ``secagg`` or
``he`` the client wraps its site in :class:`flmi.privacy.site.SecureSite`,
which holds the update back and answers the protocol's stages; the server's
:class:`flmi.runtime.grpc.coordinator.GrpcRuntime` carries those stages as
staged instructions and replies. A site that cannot answer stages (it does not
declare :data:`CAPABILITY_STAGES` at register) is refused when the plan needs
them.

Fault injection, for tests only: with the environment variable
:data:`EXIT_AT_STAGE_ENV` set to ``STAGE@ROUND`` (for example
``secagg/unmask@1``), ``flmi client`` exits at once, without answering or
saying goodbye, when that stage of that round arrives: a hospital that vanishes
mid-protocol. Nothing else sets or reads it, and the client logs a warning at
start whenever it is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmi.config import Config, PrivacyConfig
from flmi.core.errors import ConfigError
from flmi.core.exchange import SecureAggregation
from flmi.core.federation import RoundRecord
from flmi.privacy.wire import ProtocolError
from flmi.report.summary import privacy_block
from flmi.runtime.grpc import flmi_pb2 as pb
from flmi.runtime.grpc.provisioning import CA_CERT, SITE_CERT, SITE_KEY
from flmi.runtime.inprocess import SiteEndpoint

if TYPE_CHECKING:
    from flmi.privacy.he_sums import HETrust

log = logging.getLogger("flmi.secure")

#: What a site that answers protocol stages declares at register.
CAPABILITY_STAGES = "stages"
#: Test-only: ``STAGE@ROUND`` at which ``flmi client`` exits abruptly.
EXIT_AT_STAGE_ENV = "FLMI_TEST_EXIT_AT_STAGE"
#: The exit status of a client that exited at an injected fault.
EXIT_AT_STAGE_STATUS = 86
PROTOCOLS = ("secagg", "he")


@dataclass(frozen=True)
class AggregationPlan:
    """How a site's update leaves it: ``plain``, ``secagg`` or ``he`` (with the CKKS settings).

    Parameters
    ----------
    aggregation
        ``privacy.aggregation``.
    he_poly_modulus_degree, he_scale_bits
        The CKKS parameters the key holder makes its context with (``he`` only).
    """

    aggregation: str = "plain"
    he_poly_modulus_degree: int = 0
    he_scale_bits: int = 0

    @property
    def needs_stages(self) -> bool:
        """Whether the sites must answer protocol stages."""
        return self.aggregation in PROTOCOLS

    @staticmethod
    def from_config(privacy: PrivacyConfig) -> AggregationPlan:
        """The plan of ``[privacy]``."""
        if privacy.aggregation != "he":
            return AggregationPlan(aggregation=privacy.aggregation)
        return AggregationPlan(
            aggregation="he",
            he_poly_modulus_degree=privacy.he_poly_modulus_degree,
            he_scale_bits=privacy.he_scale_bits,
        )

    def to_wire(self) -> pb.AggregationPlan:
        """The plan as the register reply carries it."""
        return pb.AggregationPlan(
            aggregation=self.aggregation,
            he_poly_modulus_degree=self.he_poly_modulus_degree,
            he_scale_bits=self.he_scale_bits,
        )

    @staticmethod
    def from_wire(plan: pb.TrainingPlan) -> AggregationPlan:
        """The plan a register reply carries (absent: plain)."""
        if not plan.HasField("aggregation") or not plan.aggregation.aggregation:
            return AggregationPlan()
        a = plan.aggregation
        return AggregationPlan(
            aggregation=a.aggregation,
            he_poly_modulus_degree=int(a.he_poly_modulus_degree),
            he_scale_bits=int(a.he_scale_bits),
        )


def site_he_trust(config: Config, *, site: str, certs: Path) -> HETrust | None:
    """What ``site`` believes under ``he``: its bundle's certificate, key and CA, its own config.

    The key holder and the fewest contributions of a decrypted sum come from
    the site's own copy of the federation config, never from the server
    (``None`` when that config does not ask for ``he``).

    Raises
    ------
    ConfigError
        The bundle holds no key, or the config does not list the sites.
    """
    if config.privacy.aggregation != "he":
        return None
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from flmi.privacy.identity import Authority, SiteCredential
    from flmi.privacy.setup import he_trust

    if not config.deploy.sites:
        raise ConfigError(
            "privacy.aggregation = 'he': deploy.sites is empty in this site's federation config; "
            "list the sites, so that the site knows the key holder and how many must sign a sum"
        )
    paths = {name: certs / name for name in (SITE_CERT, SITE_KEY, CA_CERT)}
    for path in paths.values():
        if not path.is_file():
            raise ConfigError(
                f"--certs {certs}: no {path.name}; homomorphic aggregation signs with the site's "
                "certificate key, so the bundle must hold it"
            )
    key = load_pem_private_key(paths[SITE_KEY].read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"--certs {certs}: {SITE_KEY} is not an ECDSA key")
    return he_trust(
        config.privacy,
        config.federation,
        site_names=config.deploy.sites,
        credential=SiteCredential(site=site, certificate=paths[SITE_CERT].read_bytes(), key=key),
        authority=Authority(ca_certificate=paths[CA_CERT].read_bytes()),
    )


def protect(
    site: SiteEndpoint, plan: AggregationPlan, *, he_trust: HETrust | None = None
) -> SiteEndpoint:
    """``site`` as the plan needs it: unchanged for plain, a :class:`SecureSite` otherwise.

    Raises
    ------
    ConfigError
        The plan names an aggregation this site does not know, CKKS
        parameters out of range, or ``he`` while this site's own config does
        not ask for it (the site refuses the plan).
    """
    if plan.aggregation == "plain":
        return site
    if plan.aggregation not in PROTOCOLS:
        raise ConfigError(
            f"the server asks for privacy.aggregation = '{plan.aggregation}', which this "
            f"site does not know (it knows plain, {', '.join(PROTOCOLS)})"
        )
    from flmi.privacy.site import SecureSite

    if plan.aggregation == "secagg":
        return SecureSite(site=site)
    from flmi.privacy.he import CkksSettings

    try:
        ckks = CkksSettings(
            poly_modulus_degree=plan.he_poly_modulus_degree, scale_bits=plan.he_scale_bits
        )
    except ValueError as exc:
        raise ConfigError(f"the server's CKKS parameters are refused: {exc}") from None
    if he_trust is None:
        raise ConfigError(
            "the server asks for privacy.aggregation = 'he', but this site's federation config "
            "does not: set privacy.aggregation = 'he' (and privacy.he_key_holder) there too"
        )
    return SecureSite(site=site, ckks=ckks, he_trust=he_trust)


@dataclass(frozen=True)
class ExitAtStage:
    """Test-only fault: exit abruptly when ``stage`` of round ``rnd`` arrives."""

    stage: str
    rnd: int

    def hit(self, stage: str, rnd: int) -> bool:
        """Whether this is the stage to exit at."""
        return stage == self.stage and rnd == self.rnd


def exit_at_stage(environ: Mapping[str, str]) -> ExitAtStage | None:
    """The injected fault :data:`EXIT_AT_STAGE_ENV` asks for (``None``: none, the normal case).

    Raises
    ------
    ConfigError
        The variable is set but is not ``STAGE@ROUND``.
    """
    value = environ.get(EXIT_AT_STAGE_ENV, "")
    if not value:
        return None
    stage, _, rnd = value.rpartition("@")
    if not stage or not rnd.isdigit() or int(rnd) < 1:
        raise ConfigError(
            f"{EXIT_AT_STAGE_ENV} = '{value}': a test-only fault is written STAGE@ROUND, "
            "e.g. secagg/unmask@1; unset it to run normally"
        )
    log.warning(
        "TEST FAULT INJECTION: %s is set; this client will exit when stage %s of round %s "
        "arrives. Unset it for a real run.",
        EXIT_AT_STAGE_ENV,
        stage,
        rnd,
    )
    return ExitAtStage(stage=stage, rnd=int(rnd))


def injected_exit(fault: ExitAtStage) -> None:
    """Exit the process now, as a killed hospital would (no reply, no goodbye)."""
    log.error(
        "TEST FAULT INJECTION: exiting at stage %s of round %d (%s)",
        fault.stage,
        fault.rnd,
        EXIT_AT_STAGE_ENV,
    )
    logging.shutdown()
    os._exit(EXIT_AT_STAGE_STATUS)


def privacy_summary(
    privacy: PrivacyConfig, secure: SecureAggregation | None, history: Sequence[RoundRecord]
) -> dict[str, Any]:
    """``summary.json``'s privacy section; under ``he``, what the server's contexts held.

    The settings and what the last round record spent (epsilon, the adapted
    clip, each site's ledger), as a simulation reports them
    (:func:`flmi.report.summary.privacy_block`).

    Every context the homomorphic server loaded is checked again here, at the
    end of the run: one holding a secret key fails the run (it cannot happen,
    since the server refuses such a context when it arrives; this is the
    check that shows it).

    Raises
    ------
    ProtocolError
        A context the server held has a secret key.
    """
    out = privacy_block(privacy, history)
    if privacy.aggregation != "he" or secure is None:
        return out
    from flmi.privacy.he import HEServer

    assert isinstance(secure, HEServer)
    private = sum(1 for c in secure.contexts if c.is_private() or c.has_secret_key())
    if private:
        raise ProtocolError(
            f"{private} of the {len(secure.contexts)} CKKS contexts the server held had a "
            "secret key; the server may hold public contexts only"
        )
    log.info("he: the server held %d CKKS context(s), none with a secret key", len(secure.contexts))
    out["server_contexts"] = len(secure.contexts)
    out["server_contexts_with_secret_key"] = private
    return out
