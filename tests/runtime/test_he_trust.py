"""What a deployed site believes under homomorphic aggregation: its bundle and its own config."""

from __future__ import annotations

from pathlib import Path

import pytest

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.privacy.wire import ProtocolError
from flmi.runtime.grpc.provisioning import add_site, init_ca
from flmi.runtime.grpc.secure import AggregationPlan, protect, site_he_trust
from tests.runtime.deploy_support import fed_tables

SITES = ["hospital_1", "hospital_2", "hospital_3"]


def _config(**privacy: object):  # type: ignore[no-untyped-def]
    return config_from_dict(fed_tables(site_names=SITES, privacy=privacy))


def test_a_site_takes_the_key_holder_and_t_from_its_config_and_signs_with_its_bundle(
    tmp_path: Path,
) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    bundle = add_site(ca_dir=tmp_path / "ca", name="hospital_1", out=tmp_path / "h1")
    init_ca(ca_dir=tmp_path / "other")
    stranger = add_site(ca_dir=tmp_path / "other", name="hospital_1", out=tmp_path / "x")

    trust = site_he_trust(
        _config(aggregation="he", he_key_holder="hospital_3"), site="hospital_1", certs=bundle
    )
    foreign = site_he_trust(_config(aggregation="he"), site="hospital_1", certs=stranger)

    assert trust is not None and foreign is not None
    assert trust.key_holder == "hospital_3" and trust.min_contributions == 2  # 3 sites: 2 of 3
    assert foreign.key_holder == "hospital_1"  # "" = the first site by name
    signature = trust.credential.sign(b"m")
    trust.authority.verify(
        site="hospital_1",
        certificate=trust.credential.certificate,
        message=b"m",
        signature=signature,
        where="test",
    )
    with pytest.raises(ProtocolError, match="not issued by the consortium CA"):
        trust.authority.verify(
            site="hospital_1",
            certificate=foreign.credential.certificate,
            message=b"m",
            signature=foreign.credential.sign(b"m"),
            where="test",
        )
    with pytest.raises(ProtocolError, match="is 'hospital_1''s"):
        trust.authority.verify(
            site="hospital_2",
            certificate=trust.credential.certificate,
            message=b"m",
            signature=signature,
            where="test",
        )


def test_a_site_whose_config_does_not_ask_for_he_refuses_a_servers_he_plan(
    tmp_path: Path,
) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    bundle = add_site(ca_dir=tmp_path / "ca", name="hospital_1", out=tmp_path / "h1")
    trust = site_he_trust(_config(aggregation="plain"), site="hospital_1", certs=bundle)

    assert trust is None
    with pytest.raises(ConfigError, match="this site's federation config does not"):
        protect(
            object(),  # type: ignore[arg-type]
            AggregationPlan(aggregation="he", he_poly_modulus_degree=8192, he_scale_bits=40),
            he_trust=trust,
        )


def test_he_without_the_sites_listed_or_without_a_key_in_the_bundle_is_a_clear_error(
    tmp_path: Path,
) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    bundle = add_site(ca_dir=tmp_path / "ca", name="hospital_1", out=tmp_path / "h1")
    tables = fed_tables(site_names=SITES, privacy={"aggregation": "he"})
    tables["deploy"]["sites"] = []
    (bundle / "site.key").unlink()

    with pytest.raises(ConfigError, match="deploy.sites is empty"):
        site_he_trust(config_from_dict(tables), site="hospital_1", certs=bundle)
    with pytest.raises(ConfigError, match="no site.key"):
        site_he_trust(_config(aggregation="he"), site="hospital_1", certs=bundle)
