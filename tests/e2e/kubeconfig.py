"""An existing cluster from a kubeconfig file: the target of ``make e2e-kind``.

Only what the suite needs is read, from the current context: the server, its CA and the user's
credential: a bearer token (``token``, ``tokenFile``) or a client certificate (``client-certificate``
/ ``client-key``, or their ``-data`` forms, which is what ``kind get kubeconfig`` writes). Inline data
is written to files under the session's work directory (mode 0600), because the ``kubernetes``
client and ``ssl`` want paths. Exec plugins and auth providers are refused with a clear message: the
suite must be able to act as that identity without running anything.

This module does not import ``cluster`` (which imports it); ``cluster.provide`` turns
``KubeconfigError`` into ``cluster.Unavailable``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message names the file and the field."""


class NoLocalGuard(Exception):
    """A scenario asked where the apiserver reaches a local guard, but the guard runs in the cluster."""


@dataclass(frozen=True)
class Kubeconfig:
    """The cluster of a kubeconfig's current context, with the guard deployed in it."""

    path: Path
    context: str
    server: str
    ca_file: Path
    admin_token: str
    admin_client_cert: tuple[Path, Path] | None

    @property
    def description(self) -> str:
        return f"cluster of {self.path} (context {self.context})"

    @property
    def guard_in_cluster(self) -> bool:
        return True

    @property
    def guard_authorizer(self) -> bool:
        return False  # the cluster's apiserver flags were fixed at its creation (kind-config.yaml)

    @property
    def audit_log(self) -> Path | None:
        return None  # on the control plane node, not on this machine

    def guard_url(self, port: int) -> str:
        raise NoLocalGuard(
            f"the guard runs in the cluster of {self.path}; the apiserver cannot reach a guard on this "
            f"host (port {port}): scenarios must use the deployed guard (tests/e2e/incluster.py)"
        )

    def diagnostics(self) -> str:
        return f"--- {self.description}: the control plane's logs are on its nodes (kind export logs)\n"


def _named(config: dict[str, Any], section: str, name: str, path: Path) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1])  # clusters -> cluster, users -> user, contexts -> context
            if isinstance(body, dict):
                return body
    raise KubeconfigError(f"{path}: no {section[:-1]} named {name!r} in {section}")


class _Files:
    """Turns a field pair (``x`` path or ``x-data`` base64) into a file path."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path, self.directory = path, workdir / "kubeconfig-credentials"

    def get(self, section: dict[str, Any], key: str, where: str) -> Path | None:
        data = section.get(f"{key}-data")
        if data:
            try:
                content = base64.b64decode(str(data), validate=True)
            except binascii.Error as exc:
                raise KubeconfigError(f"{self.path}: {where}.{key}-data is not base64 ({exc})") from exc
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self.directory / f"{where.replace('/', '-')}-{key}"
            target.write_bytes(content)
            target.chmod(0o600)
            return target
        named = section.get(key)
        if named:
            found = Path(str(named)).expanduser()
            found = found if found.is_absolute() else self.path.parent / found
            if not found.is_file():
                raise KubeconfigError(f"{self.path}: {where}.{key} names {found}, which does not exist")
            return found
        return None


def load(path: Path, workdir: Path) -> Kubeconfig:
    """The current context of the kubeconfig at ``path``; credentials materialised under ``workdir``."""
    if not path.is_file():
        raise KubeconfigError(f"{path} does not exist (make e2e-kind writes .e2e/kind/kubeconfig)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path}: not YAML ({exc})") from exc
    if not isinstance(config, dict) or not config.get("current-context"):
        raise KubeconfigError(f"{path}: no current-context")
    context_name = str(config["current-context"])
    context = _named(config, "contexts", context_name, path)
    cluster_name, user_name = str(context.get("cluster", "")), str(context.get("user", ""))
    cluster = _named(config, "clusters", cluster_name, path)
    user = _named(config, "users", user_name, path)
    files = _Files(path, workdir)

    server = str(cluster.get("server", ""))
    if not server.startswith("https://"):
        raise KubeconfigError(f"{path}: clusters/{cluster_name}.server must be an https URL (got {server!r})")
    if cluster.get("insecure-skip-tls-verify"):
        raise KubeconfigError(
            f"{path}: clusters/{cluster_name} skips TLS verification; give it its CA instead"
        )
    ca_file = files.get(cluster, "certificate-authority", f"cluster/{cluster_name}")
    if ca_file is None:
        raise KubeconfigError(f"{path}: clusters/{cluster_name} has no certificate-authority(-data)")

    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise KubeconfigError(
                f"{path}: users/{user_name} authenticates with {unsupported}; the suite supports a token "
                "or a client certificate (what kind writes)"
            )
    token = str(user.get("token") or "")
    token_file = files.get(user, "tokenFile", f"user/{user_name}") if user.get("tokenFile") else None
    if token_file is not None:
        token = token_file.read_text().strip()
    cert = files.get(user, "client-certificate", f"user/{user_name}")
    key = files.get(user, "client-key", f"user/{user_name}")
    if (cert is None) != (key is None):
        raise KubeconfigError(f"{path}: users/{user_name} needs both client-certificate and client-key")
    if not token and cert is None:
        raise KubeconfigError(f"{path}: users/{user_name} has neither a token nor a client certificate")
    return Kubeconfig(
        path=path,
        context=context_name,
        server=server.rstrip("/"),
        ca_file=ca_file,
        admin_token=token,
        admin_client_cert=(cert, key) if cert is not None and key is not None else None,
    )
