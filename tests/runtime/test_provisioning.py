"""Consortium certificates: a CA whose key stays home, a server bundle, site bundles."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flmi.cli import main
from flmi.runtime.grpc.provisioning import ProvisioningError, add_site, init_ca, site_identity


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_and_a_server_bundle_without_the_ca_key(tmp_path: Path) -> None:
    server = init_ca(ca_dir=tmp_path / "ca")
    assert sorted(p.name for p in server.iterdir()) == ["ca.pem", "server.key", "server.pem"]
    assert _mode(tmp_path / "ca" / "ca.key") == 0o600 and _mode(server / "server.key") == 0o600
    ca, cert = _cert(tmp_path / "ca" / "ca.pem"), _cert(server / "server.pem")
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert cert.not_valid_after_utc > cert.not_valid_before_utc


def test_site_bundle_holds_ca_cert_site_cert_and_key_named_by_the_site(tmp_path: Path) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    bundle = add_site(ca_dir=tmp_path / "ca", name="hospital_a", out=tmp_path / "a", days=30)
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.pem", "site.key", "site.pem"]
    assert _mode(bundle / "site.key") == 0o600
    cert = _cert(bundle / "site.pem")
    cert.verify_directly_issued_by(_cert(tmp_path / "ca" / "ca.pem"))
    assert site_identity((bundle / "site.pem").read_bytes()) == "hospital_a"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    assert not any((bundle / n).exists() for n in ("ca.key",))


def test_site_with_its_own_key_sends_a_csr_and_gets_no_key_back(tmp_path: Path) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hospital_b")]))
        .sign(key, hashes.SHA256())
    )
    csr = tmp_path / "b.csr"
    csr.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    bundle = add_site(ca_dir=tmp_path / "ca", name="hospital_b", out=tmp_path / "b", csr=csr)
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.pem", "site.pem"]
    assert _cert(bundle / "site.pem").public_key() == key.public_key()


def test_an_existing_ca_is_never_overwritten(tmp_path: Path) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    before = (tmp_path / "ca" / "ca.key").read_bytes()
    with pytest.raises(ProvisioningError, match="already holds a CA key"):
        init_ca(ca_dir=tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.key").read_bytes() == before


@pytest.mark.parametrize("name", ["", "../etc", "a b", "-x"])
def test_a_site_name_that_cannot_be_an_identity_is_refused(tmp_path: Path, name: str) -> None:
    init_ca(ca_dir=tmp_path / "ca")
    with pytest.raises(ProvisioningError, match="site name"):
        add_site(ca_dir=tmp_path / "ca", name=name, out=tmp_path / "x")


def test_add_site_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="flmi certs init"):
        add_site(ca_dir=tmp_path / "none", name="a", out=tmp_path / "a")


def test_cli_makes_a_ca_and_a_site_bundle(tmp_path: Path) -> None:
    assert main(["certs", "init", str(tmp_path / "ca")]) == 0
    assert (
        main(["certs", "add-site", str(tmp_path / "ca"), "h1", "--out", str(tmp_path / "h1")]) == 0
    )
    assert (tmp_path / "h1" / "site.pem").is_file()
    assert main(["certs", "init", str(tmp_path / "ca")]) == 2  # refused, nothing overwritten
