"""Development and in-cluster TLS material: a CA and a separate serving certificate it signs.

The apiserver verifies the webhook against ``caBundle`` and the service DNS name, so the leaf carries
every name the apiserver may dial (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``)
plus loopback for local runs. Keys are ECDSA P-256 and written 0600. A valid existing pair is never
replaced silently.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVICE = "agent-guard"
DEFAULT_NAMESPACE = "agent-guard-system"
DEFAULT_DAYS = 365
CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "tls.crt", "tls.key"


class CertError(Exception):
    """Certificates that cannot be used or written; the message says which file and why."""


@dataclass(frozen=True)
class Paths:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / CA_FILE

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY_FILE

    @property
    def cert(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE


def dns_names(service: str, namespace: str) -> list[str]:
    return [
        "localhost",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


IP_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the start (a key is never briefly world-readable)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


write_file = _write  # the same atomic, mode-first write for other certificate material (clientauth)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kube-agent-guard"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_ca(
    common_name: str, start: datetime.datetime, end: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed ECDSA P-256 CA that may sign leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def generate(
    directory: Path,
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    days: int = DEFAULT_DAYS,
    key_type: Literal["ecdsa", "rsa"] = "ecdsa",
) -> Paths:
    """Create a fresh CA and serving certificate in ``directory`` (overwrites; callers check first).

    ``key_type`` is the serving key's (ECDSA P-256 by default; RSA 2048 for clients that need it).
    """
    if days < 1:
        raise CertError(f"--days must be at least 1, got {days}")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key, ca_cert = new_ca(f"kube-agent-guard CA {now:%Y-%m-%d}", start, end + datetime.timedelta(days=1))
    ca_name = ca_cert.subject
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names(service, namespace)]
    sans += [x509.IPAddress(ip) for ip in IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{service}.{namespace}.svc"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = Paths(directory)
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write(paths.ca_key, ca_key.private_bytes(pem, private, plain), 0o600)
    _write(paths.key, key.private_bytes(pem, private, plain), 0o600)
    _write(paths.ca, ca_cert.public_bytes(pem), 0o644)
    _write(paths.cert, cert.public_bytes(pem), 0o644)
    return paths


def problems(
    directory: Path, service: str = DEFAULT_SERVICE, namespace: str = DEFAULT_NAMESPACE
) -> list[str]:
    """Why the pair in ``directory`` is not usable for this service (empty list: it is)."""
    paths = Paths(directory)
    missing = [p.name for p in (paths.ca, paths.cert, paths.key) if not p.is_file()]
    if missing:
        return [f"{directory}: missing {', '.join(missing)}"]
    try:
        ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        return [f"{directory}: unreadable certificate or key: {exc}"]
    found = []
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now or ca.not_valid_after_utc <= now:
        found.append(f"{paths.cert}: expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature) as exc:
        found.append(f"{paths.cert}: not signed by {paths.ca} ({exc or 'bad signature'})")
    if key.public_key() != cert.public_key():
        found.append(f"{paths.key}: does not match {paths.cert}")
    try:
        names = set(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName
            )
        )
    except x509.ExtensionNotFound:
        names = set()
    lacking = [n for n in dns_names(service, namespace) if n not in names]
    if lacking:
        found.append(f"{paths.cert}: lacks DNS names {', '.join(lacking)}")
    return found


def check_ca_bundle(text: str) -> str:
    """``text`` if it is a usable ``caBundle`` (base64 of PEM certificates), else CertError saying why."""
    try:
        pem = base64.b64decode(text, validate=True)
    except ValueError:
        raise CertError(
            "the caBundle is not base64 (base64 of the PEM CA certificate, e.g. base64 -w0 ca.crt)"
        ) from None
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertError("the caBundle does not decode to a PEM certificate (base64 -w0 ca.crt)") from None
    return text


def ca_bundle(directory: Path) -> str:
    """Base64 of ``ca.crt``: the ``caBundle`` of a webhook configuration."""
    return base64.b64encode(Paths(directory).ca.read_bytes()).decode("ascii")


def ensure(
    directory: Path,
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> tuple[Paths, bool]:
    """Keep a valid pair, create one where there is none; ``(paths, created)``.

    A pair that exists but is unusable is refused (CertError) unless ``force``: replacing it would
    break every client that trusts the old CA, and that should be a decision, not a side effect.
    """
    paths = Paths(directory)
    present = [p for p in (paths.ca, paths.cert, paths.key) if p.exists()]
    if force or not present:
        return generate(directory, service, namespace, days), True
    found = problems(directory, service, namespace)
    if found:
        raise CertError("; ".join(found) + " (use --force to replace the pair)")
    return paths, False


def not_after(cert_file: Path) -> datetime.datetime:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
