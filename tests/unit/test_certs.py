"""Certificates: chain, SANs, key usages, file modes, and never silently replacing a good pair."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook import certs, cli


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_chain_sans_and_usages(tmp_path: Path) -> None:
    paths = certs.generate(tmp_path, service="guard", namespace="sec", days=30)
    ca, leaf = _load(paths.ca), _load(paths.cert)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "guard",
        "guard.sec",
        "guard.sec.svc",
        "guard.sec.svc.cluster.local",
    }
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 29 < lifetime.days <= 31
    assert ca.public_key() != leaf.public_key()


def test_keys_are_private(tmp_path: Path) -> None:
    paths = certs.generate(tmp_path)
    for key in (paths.key, paths.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.cert.stat().st_mode) == 0o644


def test_valid_pair_is_kept_unless_forced(tmp_path: Path) -> None:
    first, created = certs.ensure(tmp_path)
    assert created
    before = first.cert.read_bytes()
    _, created = certs.ensure(tmp_path)
    assert not created and first.cert.read_bytes() == before
    _, created = certs.ensure(tmp_path, force=True)
    assert created and first.cert.read_bytes() != before


def test_pair_for_another_service_is_refused_not_replaced(tmp_path: Path) -> None:
    paths = certs.generate(tmp_path, service="other")
    before = paths.cert.read_bytes()
    with pytest.raises(certs.CertError, match="lacks DNS names agent-guard"):
        certs.ensure(tmp_path)
    assert paths.cert.read_bytes() == before


def test_mismatched_key_is_reported(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    other = certs.generate(tmp_path / "other")
    (tmp_path / "tls.key").write_bytes(other.key.read_bytes())
    assert any("does not match" in p for p in certs.problems(tmp_path))


def test_cli_prints_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["certs", "--out", str(tmp_path), "--service", "s", "--namespace", "n"]) == 0
    assert capsys.readouterr().out.strip() == certs.ca_bundle(tmp_path)
    assert cli.main(["certs", "--out", str(tmp_path)]) == 1  # pair for s.n kept, default names refused
    assert "use --force" in capsys.readouterr().err
