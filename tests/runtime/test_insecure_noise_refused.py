"""A deployment never runs with seeded DP noise: ``flmi server`` and ``flmi client`` refuse it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flmi.config import config_from_dict
from flmi.core.errors import ConfigError
from flmi.runtime.grpc.client import SiteClient
from flmi.runtime.grpc.clientapp import build_client
from flmi.runtime.grpc.server import serve
from tests.runtime.deploy_support import Deployment, fed_tables, write_fed

SITES = ["hospital_1", "hospital_2"]
INSECURE = {"dp": "client", "noise_at": "site", "insecure_reproducible_noise": True}


def test_the_server_refuses_insecure_reproducible_noise_before_writing_anything(
    deployment: Deployment, tmp_path: Path
) -> None:
    config = config_from_dict(fed_tables(site_names=SITES, privacy=INSECURE))
    with pytest.raises(ConfigError, match=r"flmi server refuses privacy\.insecure_reproducible"):
        serve(
            config=config,
            certs=deployment.ca / "server",
            address="127.0.0.1:0",
            out=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


def test_a_client_refuses_a_federation_config_with_insecure_reproducible_noise(
    deployment: Deployment,
) -> None:
    def build() -> object:
        return build_client(
            server="127.0.0.1:1",
            site="hospital_1",
            certs=deployment.bundle("hospital_1"),
            data=deployment.site_toml("hospital_1"),
        )

    write_fed(deployment, fed_tables(site_names=SITES, privacy=INSECURE))
    with pytest.raises(ConfigError, match=r"flmi client refuses privacy\.insecure_reproducible"):
        build()
    # The same federation with the default (secure) noise builds: the key alone was refused.
    secure = {k: v for k, v in INSECURE.items() if k != "insecure_reproducible_noise"}
    write_fed(deployment, fed_tables(site_names=SITES, privacy=secure))
    assert isinstance(build(), SiteClient)
