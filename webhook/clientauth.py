"""Client authentication of the kube-apiserver: only reviews the apiserver really sent may count.

Without it, anything that reaches the guard's port can POST an AdmissionReview; with budgets that
would let it spend an agent's budget (or fill the decision log). With ``serve --client-ca FILE`` the
TLS server asks every client for a certificate and verifies any it is given against that CA; review
endpoints (``/validate``, ``/authorize``) then answer 403 to a connection that presented none (or one
whose common name is not in ``--client-name``). ``/healthz``, ``/readyz`` and ``/metrics`` stay open,
because kubelet probes and Prometheus do not present the apiserver's certificate.

The certificate is requested with ``CERT_OPTIONAL`` (a certificate that does not verify fails the
handshake; no certificate at all completes it), and the result is attached per connection: the
uvicorn HTTP protocol is subclassed so that ``connection_made`` wraps the app with the peer's verified
subject, which reaches the ASGI scope as ``scope["extensions"]["agent-guard.io/client"]``.

The kube-apiserver presents a client certificate to a webhook when its admission configuration
(``--admission-control-config-file``) gives the ``ValidatingAdmissionWebhook`` plugin a
``kubeConfigFile`` whose user entry for the webhook's host has ``client-certificate``/``client-key``;
``issue`` and ``admission_files`` write both for a dedicated CA (``agent-guard apiserver-client``).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn.config
import uvicorn.importer
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook import certs

SCOPE_KEY = "agent-guard.io/client"
DEFAULT_CLIENT_NAME = "kube-apiserver"
CA_FILE, CERT_FILE, KEY_FILE = "client-ca.crt", "apiserver-client.crt", "apiserver-client.key"
CONFIG_FILE, KUBECONFIG_FILE = "admission-config.yaml", "admission-kubeconfig.yaml"
CONFIG_FILES = (CONFIG_FILE, KUBECONFIG_FILE)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ClientAuthError(Exception):
    """The client CA cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The verified client certificate of one connection (None fields: it presented none)."""

    common_name: str | None


def require(context: ssl.SSLContext, client_ca: Path) -> None:
    """Make ``context`` ask clients for a certificate and verify any against ``client_ca``."""
    try:
        context.load_verify_locations(cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ClientAuthError(f"cannot load the client CA {client_ca}: {exc}") from exc
    context.verify_mode = ssl.CERT_OPTIONAL


def _peer(transport: asyncio.BaseTransport) -> Peer:
    ssl_object = transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:  # no certificate presented (a presented one that failed never got this far)
        return Peer(None)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return Peer(str(value))
    return Peer("")


class _WithPeer:
    """The app, told which verified certificate the connection carries."""

    def __init__(self, app: ASGIApp, peer: Peer) -> None:
        self.app, self.peer = app, peer

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("extensions", {})[SCOPE_KEY] = self.peer
        await self.app(scope, receive, send)


def protocol(http: str | type[asyncio.Protocol] = "auto") -> type[asyncio.Protocol]:
    """An HTTP protocol class (uvicorn's by name, or a subclass of one) that attaches each
    connection's verified client certificate."""
    base: type[asyncio.Protocol] = (
        http
        if isinstance(http, type)
        else uvicorn.importer.import_from_string(uvicorn.config.HTTP_PROTOCOLS[http])
    )

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        base.connection_made(self, transport)
        self.app = _WithPeer(self.app, _peer(transport))

    return type(f"ClientCert{base.__name__}", (base,), {"connection_made": connection_made})


@dataclass(frozen=True)
class Clients:
    """Who may post reviews: a certificate from the client CA, optionally with one of these names."""

    names: frozenset[str] = frozenset()

    def refusal(self, scope: Scope) -> str | None:
        """Why this request may not post a review (None: it may)."""
        peer = scope.get("extensions", {}).get(SCOPE_KEY)
        if not isinstance(peer, Peer) or peer.common_name is None:
            return (
                "reviews are accepted only from the kube-apiserver: this guard requires a client "
                "certificate signed by its client CA (serve --client-ca), and none was presented"
            )
        if self.names and peer.common_name not in self.names:
            return (
                f"reviews are accepted only from the kube-apiserver: client certificate common name "
                f"{peer.common_name!r} is not one of {', '.join(sorted(self.names))} (serve --client-name)"
            )
        return None


def issue(directory: Path, common_name: str = DEFAULT_CLIENT_NAME, days: int = certs.DEFAULT_DAYS) -> None:
    """A dedicated client CA and the apiserver's client certificate signed by it.

    The CA's key is never written: nothing else can ever be issued by this CA, so trusting it means
    trusting exactly this one certificate (issue again to rotate, and restart the guard).
    """
    if days < 1:
        raise ClientAuthError(f"--days must be at least 1, got {days}")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key, ca = certs.new_ca(f"kube-agent-guard client CA {now:%Y-%m-%d}", start, end)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs.write_file(
        directory / KEY_FILE,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    certs.write_file(directory / CERT_FILE, cert.public_bytes(pem), 0o644)
    certs.write_file(directory / CA_FILE, ca.public_bytes(pem), 0o644)


def admission_files(host: str, cert_file: str, key_file: str, kubeconfig_path: str) -> dict[str, str]:
    """The kube-apiserver's AdmissionConfiguration and the kubeconfig it points at.

    ``host`` is how the apiserver names the webhook: ``<service>.<namespace>.svc`` for a Service on
    port 443, ``host:port`` for a URL, or ``*`` for every webhook (then every webhook gets the
    certificate; that discloses no secret, but name the guard where you can).
    """
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{"name": host, "user": {"client-certificate": cert_file, "client-key": key_file}}],
    }
    webhook_admission = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": kubeconfig_path,
    }
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{"name": "ValidatingAdmissionWebhook", "configuration": webhook_admission}],
    }
    return {
        CONFIG_FILE: yaml.safe_dump(config, sort_keys=False),
        KUBECONFIG_FILE: yaml.safe_dump(kubeconfig, sort_keys=False),
    }
