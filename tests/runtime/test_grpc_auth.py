"""Who may connect: mutual TLS against the consortium CA, the allow-list, revocation, schema."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from flmi.config import load_config
from flmi.runtime.grpc.provisioning import add_site, init_ca
from flmi.runtime.grpc.server import deployment_task
from flmi.tasks.torch_params import params_copy
from tests.runtime.deploy_support import Deployment, fed_tables, output, wait, write_fed
from tests.runtime.grpc_calls import code_of, register_request, stub

pytestmark = pytest.mark.slow
SITES = ["hospital_1", "hospital_2", "hospital_3"]


def _model(fed: Path) -> dict[str, np.ndarray]:
    return params_copy(deployment_task(load_config(fed)).build_model(seed=0))


def test_a_valid_client_is_accepted_while_another_cas_and_a_certless_one_are_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: the server waits briefly, then runs with whoever got in.
    fed = write_fed(
        deployment,
        fed_tables(site_names=SITES, federation={"rounds": 1}, deploy={"wait_for_sites_s": 1.0}),
    )
    other_ca = tmp_path / "other-ca"
    init_ca(ca_dir=other_ca)
    impostor = add_site(ca_dir=other_ca, name="hospital_2", out=tmp_path / "impostor")
    run = tmp_path / "run"
    server, address = deployment.start_server(out=run)

    # Act
    impostor_client = deployment.start_client(
        "hospital_2",
        address,
        certs=impostor,
        data=deployment.site_toml("hospital_2", reconnect_timeout_s=1.0),
    )
    valid = deployment.start_client("hospital_1", address)
    with pytest.raises(grpc.RpcError) as certless:
        stub(address, ca=deployment.ca / "ca.pem", bundle=None).Register(
            register_request(_model(fed)), timeout=30
        )

    # Assert
    assert wait(valid) == 0 and wait(server) == 0
    assert wait(impostor_client) == 3
    assert "cannot reach the server" in output(impostor_client)
    assert certless.value.code() == grpc.StatusCode.UNAVAILABLE
    peers = {line.split('"peer":"')[1].split('"')[0] for line in (run / "audit.jsonl").open()}
    assert peers == {"hospital_1"}


def test_a_revoked_site_is_refused_on_every_call(deployment: Deployment, tmp_path: Path) -> None:
    # Arrange
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("# revoked sites\nhospital_2\n")
    fed = write_fed(
        deployment, fed_tables(site_names=SITES, deploy={"revocation_list": str(revoked)})
    )
    _, address = deployment.start_server(out=tmp_path / "run")
    calls = stub(address, ca=deployment.ca / "ca.pem", bundle=deployment.bundle("hospital_2"))

    # Act
    with pytest.raises(grpc.RpcError) as refused:
        calls.Register(register_request(_model(fed)), timeout=30)

    # Assert
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(refused.value) == "site_revoked"


def test_a_site_whose_model_differs_is_refused_at_register_naming_the_first_differing_tensor(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: the site's model has a wider head than the federation's.
    fed = write_fed(deployment, fed_tables(site_names=SITES))
    _, address = deployment.start_server(out=tmp_path / "run")
    params = _model(fed)
    names = sorted(params)
    params[names[-1]] = np.zeros((*params[names[-1]].shape, 2), dtype=params[names[-1]].dtype)
    params[names[-2]] = np.zeros((3,), dtype=params[names[-2]].dtype)
    calls = stub(address, ca=deployment.ca / "ca.pem", bundle=deployment.bundle("hospital_3"))

    # Act
    with pytest.raises(grpc.RpcError) as refused:
        calls.Register(register_request(params), timeout=30)

    # Assert
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(refused.value) == "schema_mismatch"
    assert f"tensor '{names[-2]}'" in refused.value.details()
