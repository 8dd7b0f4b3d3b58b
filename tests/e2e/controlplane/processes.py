"""Start, wait for and stop etcd and kube-apiserver as local processes.

Everything lives in one work directory (data, certificates, token file, audit policy and log, process
logs) and on ephemeral loopback ports. The apiserver authorizes with the ``AuthorizationConfiguration``
file it is given (``authorization_flags``): the one the guard's ``webhook.manifests`` renders puts the
guard's authorizer between Node and RBAC. The caller writes it, because it names the guard's URL.

There is no controller-manager, scheduler or kubelet: Deployments never get pods and namespaces stay
``Terminating`` after a delete. Tests create what those would (the ``default`` ServiceAccount).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests import serving
from webhook import certs

READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 15.0
PR_SET_PDEATHSIG = 1
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the process binding it
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "e2e-admin"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "ServiceAccount",
    "PodSecurity",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
)

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    nonResourceURLs: ["/readyz*", "/livez*", "/healthz*", "/version", "/openapi*"]
  - level: None
    users: ["system:apiserver"]
  # Writes with their request bodies, so that `agent-guard replay` can judge what was sent (Secrets
  # stay at Metadata: their bodies are secret data).
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: Request
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
"""


class ControlPlaneError(Exception):
    """A process did not start or become ready; the message carries its log tail."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


# Resolved once here, so that the child between fork and exec only makes one plain system call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Linux: SIGTERM the child if the test process dies without cleaning up (SIGKILL, OOM)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(name: str, command: Sequence[str], log: Path) -> Process:
    """Start a process with its output in ``log``, in its own session (Ctrl-C reaches only us)."""
    with log.open("ab") as sink:
        sink.write(f"$ {' '.join(command)}\n".encode())
        sink.flush()
        popen = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the suite starts no threads
        )
    return Process(name, popen, log)


def _wait(process: Process, url: str, context: ssl.SSLContext | None, headers: Mapping[str, str]) -> bool:
    """Poll ``url`` until it answers 200 (True) or the process exits (False)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            return False
        request = urllib.request.Request(url, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            pass
        time.sleep(0.2)
    process.stop()
    raise ControlPlaneError(
        f"{process.name} not ready after {READY_TIMEOUT_SECONDS:.0f}s ({url}); log {process.log}:\n"
        f"{process.output()}"
    )


def _start_until_ready(
    name: str,
    launch: Callable[[], tuple[Process, str]],
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Process:
    for _ in range(START_ATTEMPTS):
        process, url = launch()
        try:
            if _wait(process, url, context, headers or {}):
                return process
        except BaseException:  # Ctrl-C while waiting: never leave the process behind
            process.stop()
            raise
        if "address already in use" not in process.output():
            break
    raise ControlPlaneError(
        f"{name} exited with {process.popen.returncode}; log {process.log}:\n{process.output()}"
    )


@dataclass
class Etcd:
    process: Process
    client_url: str


def start_etcd(binary: Path, workdir: Path) -> Etcd:
    client_url = ""

    def launch() -> tuple[Process, str]:
        nonlocal client_url
        client_port = serving.free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{serving.free_port()}"
        command = [
            str(binary),
            "--name=e2e",
            f"--data-dir={workdir / f'etcd-data-{client_port}'}",  # fresh per attempt: peer URLs differ
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=e2e={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # a throw-away test store: durability is not the point, speed is
            "--log-level=warn",
        ]
        return start("etcd", command, workdir / "etcd.log"), f"{client_url}/health"

    return Etcd(_start_until_ready("etcd", launch), client_url)


@dataclass(frozen=True)
class Pki:
    """The apiserver's serving pair, ServiceAccount signing key and static admin token."""

    directory: Path
    admin_token: str

    @property
    def ca(self) -> Path:
        return certs.Paths(self.directory).ca

    @property
    def cert(self) -> Path:
        return certs.Paths(self.directory).cert

    @property
    def key(self) -> Path:
        return certs.Paths(self.directory).key

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def tokens(self) -> Path:
        return self.directory / "tokens.csv"


def make_pki(directory: Path, extra_tokens: Sequence[str] = (), serving_ips: Sequence[str] = ()) -> Pki:
    # SANs: localhost, 127.0.0.1, ::1 and kubernetes.default.svc(.cluster.local): what clients dial.
    certs.generate(directory, service="kubernetes", namespace="default")
    if serving_ips:
        _add_ip_sans(certs.Paths(directory), serving_ips)
    pki = Pki(directory, admin_token=secrets.token_urlsafe(32))
    signing = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    pki.service_account_key.write_bytes(
        signing.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pki.service_account_key.chmod(0o600)
    pki.service_account_public_key.write_bytes(
        signing.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # token,user,uid,"groups": system:masters bypasses every authorizer, like a kubeadm admin.
    # ``extra_tokens``: more lines of that file (the real node's kubelet and controllers).
    lines = [f'{pki.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"', *extra_tokens]
    pki.tokens.write_text("".join(f"{line}\n" for line in lines))
    pki.tokens.chmod(0o600)
    return pki


def _add_ip_sans(paths: certs.Paths, addresses: Sequence[str]) -> None:
    """Re-issue the serving certificate (same key, same CA) with more IP addresses: pods reach the
    real node's apiserver at the ``kubernetes`` Service's ClusterIP and the node's address."""
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    current = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey) and isinstance(key, ec.EllipticCurvePrivateKey)
    names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    extended = x509.SubjectAlternativeName(
        [*names, *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(current.not_valid_before_utc)
        .not_valid_after(current.not_valid_after_utc)
    )
    for extension in current.extensions:
        if isinstance(extension.value, x509.SubjectAlternativeName):
            builder = builder.add_extension(extended, critical=extension.critical)
        elif not isinstance(extension.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def authorization_flags(authorization_config: Path) -> list[str]:
    """How the apiserver authorizes: the structured configuration replaces ``--authorization-mode``."""
    return [f"--authorization-config={authorization_config}"]


@dataclass
class ApiServer:
    process: Process
    url: str
    pki: Pki
    audit_log: Path


def admission_flags(admission_config: Path | None) -> list[str]:
    """Plugin configuration (e.g. the client certificate the apiserver presents to webhooks)."""
    return [f"--admission-control-config-file={admission_config}"] if admission_config is not None else []


def start_apiserver(
    binary: Path,
    workdir: Path,
    etcd: Etcd,
    authorization_config: Path,
    admission_config: Path | None = None,
    *,
    extra_flags: Sequence[str] = (),
    extra_tokens: Sequence[str] = (),
    address: str = "127.0.0.1",
    serving_ips: Sequence[str] = (),
) -> ApiServer:
    """``extra_flags`` come last (a repeated flag overrides ours); the real node passes the kubelet
    client certificate, ``extra_tokens`` its components' credentials, ``address`` (where it listens
    and what it advertises: an address its pods reach) and ``serving_ips`` (more IP SANs)."""
    pki = make_pki(workdir / "pki", extra_tokens, serving_ips)
    audit_policy = workdir / "audit-policy.yaml"
    audit_policy.write_text(AUDIT_POLICY)
    audit_log = workdir / "audit.log"
    url = ""

    def launch() -> tuple[Process, str]:
        nonlocal url
        port = serving.free_port(address)
        url = f"https://{address}:{port}"
        command = [
            str(binary),
            f"--etcd-servers={etcd.client_url}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={port}",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.cert}",
            f"--tls-private-key-file={pki.key}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--token-auth-file={pki.tokens}",
            *authorization_flags(authorization_config),
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            *admission_flags(admission_config),
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-mode=blocking",
            "--allow-privileged=true",  # so that the admin can create what the guard denies to agents
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",  # 127.0.0.1 is no valid endpoint and nothing needs one
            "--profiling=false",
            "--v=1",
            *extra_flags,
        ]
        return start("kube-apiserver", command, workdir / "kube-apiserver.log"), f"{url}/readyz"

    context = ssl.create_default_context(cafile=str(pki.ca))
    headers = {"Authorization": f"Bearer {pki.admin_token}"}
    process = _start_until_ready("kube-apiserver", launch, context, headers)
    return ApiServer(process, url, pki, audit_log)


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair and where to find their files."""

    workdir: Path
    etcd: Etcd
    apiserver: ApiServer

    def diagnostics(self, lines: int = 60) -> str:
        parts = []
        for process in (self.etcd.process, self.apiserver.process):
            state = "running" if process.alive() else f"exited {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}), last {lines} lines of {process.log}:\n")
            parts.append(process.output(lines) + "\n")
        return "".join(parts)


class OwnControlPlane:
    """The ``cluster.Target`` properties of a control plane this suite started itself (``self.plane``):
    the apiserver's URL, CA, the admin's static token, the audit log and the authorizer file."""

    plane: ControlPlane

    @property
    def server(self) -> str:
        return self.plane.apiserver.url

    @property
    def ca_file(self) -> Path:
        return self.plane.apiserver.pki.ca

    @property
    def admin_token(self) -> str:
        return self.plane.apiserver.pki.admin_token

    @property
    def admin_client_cert(self) -> tuple[Path, Path] | None:
        return None

    @property
    def guard_authorizer(self) -> bool:
        return True

    @property
    def audit_log(self) -> Path | None:
        return self.plane.apiserver.audit_log


@contextlib.contextmanager
def running(
    workdir: Path,
    etcd_binary: Path,
    apiserver_binary: Path,
    authorization_config: Path,
    admission_config: Path | None = None,
    *,
    extra_flags: Sequence[str] = (),
    extra_tokens: Sequence[str] = (),
    address: str = "127.0.0.1",
    serving_ips: Sequence[str] = (),
) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver (authorizing with ``authorization_config``), ready; both stopped on exit.
    ``extra_flags``, ``extra_tokens``, ``address`` and ``serving_ips``: see ``start_apiserver``."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        etcd = start_etcd(etcd_binary, workdir)
        stack.callback(etcd.process.stop)
        apiserver = start_apiserver(
            apiserver_binary,
            workdir,
            etcd,
            authorization_config,
            admission_config,
            extra_flags=extra_flags,
            extra_tokens=extra_tokens,
            address=address,
            serving_ips=serving_ips,
        )
        stack.callback(apiserver.process.stop)
        yield ControlPlane(workdir, etcd, apiserver)
