"""Kubernetes clients for the end-to-end suite: one identity each, typed APIs plus raw requests.

The typed ``kubernetes`` APIs are what an MCP server uses; ``Client.request`` sends a raw request with
the same credential and returns status, body and headers whatever the status, because the scenarios
assert on exactly those: the 403 and its message, ``Warning`` headers, the ``Audit-Id``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.e2e import cluster

TOKEN_SECONDS = 6 * 3600
_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"(?P<text>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Request:
    """One API call, replayable by any identity (and with ``dryRun=All``)."""

    method: str
    path: str
    body: Mapping[str, Any] | Sequence[Any] | None = None  # a JSON patch is a list
    query: Sequence[tuple[str, str]] = ()
    content_type: str = "application/json"
    accept: str = "application/json"  # e.g. "*/*" for pods/log, which answers text/plain
    headers: Sequence[tuple[str, str]] = ()  # e.g. ("Impersonate-User", "jane")

    def dry_run(self) -> Request:
        return dataclasses.replace(self, query=(*self.query, ("dryRun", "All")))


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    text: str = ""  # the body as received (pods/log answers text/plain)

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def audit_id(self) -> str:
        return self.headers.get("Audit-Id", "")

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message or json.dumps(self.body)[:300]}"


def parse_warnings(values: Sequence[str]) -> tuple[str, ...]:
    """The texts of ``Warning: 299 - "text"`` headers (RFC 7234 form, as the apiserver writes them)."""
    texts = []
    for value in values:
        found = _WARNING.match(value)
        if found is not None:
            texts.append(re.sub(r"\\(.)", r"\1", found.group("text")))
    return tuple(texts)


@dataclass
class Client:
    """An identity on the target cluster: ``name`` for messages, a bearer token or a client
    certificate (a kind kubeconfig's admin), typed APIs."""

    name: str
    target: cluster.Target
    token: str
    client_cert: tuple[Path, Path] | None = None  # (certificate, key) files
    api: Any = field(init=False)

    def __post_init__(self) -> None:
        configuration = kubernetes.client.Configuration(host=self.target.server)
        if self.token:
            configuration.api_key = {"BearerToken": self.token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        if self.client_cert is not None:
            configuration.cert_file, configuration.key_file = map(str, self.client_cert)
        configuration.ssl_ca_cert = str(self.target.ca_file)
        self.api = kubernetes.client.ApiClient(configuration)

    @property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return kubernetes.client.AppsV1Api(self.api)

    @property
    def admissionregistration(self) -> Any:
        return kubernetes.client.AdmissionregistrationV1Api(self.api)

    def request(self, request: Request) -> Reply:
        url = self.target.server + request.path
        if request.query:
            url += "?" + urllib.parse.urlencode(list(request.query))
        headers = {**dict(request.headers), "Accept": request.accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if request.body is not None:
            headers["Content-Type"] = request.content_type
            payload = json.dumps(request.body)
        answer = self.api.rest_client.pool_manager.request(
            request.method, url, body=payload, headers=headers, timeout=30, retries=False
        )
        text = answer.data.decode(errors="replace")
        try:
            body = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"message": text}
        if not isinstance(body, dict):
            body = {"items": body}
        return Reply(
            answer.status,
            body,
            {key: value for key, value in answer.headers.items()},
            parse_warnings(answer.headers.getlist("Warning")),
            text,
        )

    def ok(self, request: Request) -> Reply:
        """A request that must succeed (setup steps): raise with the apiserver's answer otherwise."""
        reply = self.request(request)
        if not 200 <= reply.status < 300:
            raise AssertionError(f"{self.name}: {request.method} {request.path} failed: {reply}")
        return reply

    def apply(self, path: str, obj: Mapping[str, Any]) -> Reply:
        """Create ``obj`` under the collection ``path``; an existing object is left alone."""
        reply = self.request(Request("POST", path, obj))
        if reply.status == 409:
            return reply
        if not 200 <= reply.status < 300:
            raise AssertionError(f"{self.name}: creating under {path} failed: {reply}")
        return reply


def admin(target: cluster.Target) -> Client:
    """The target's admin: a static token locally, the kubeconfig's identity on an existing cluster."""
    return Client("admin", target, target.admin_token, target.admin_client_cert)


def refusal(exc: kubernetes.client.ApiException) -> Reply:
    """What a typed API call that raised got from the apiserver, as a ``Reply`` (status, Status body)."""
    text = exc.body or ""
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        body = {"message": text}
    headers = exc.headers or {}
    return Reply(
        int(exc.status or 0), body if isinstance(body, dict) else {"message": text}, dict(headers), text=text
    )


def ensure_namespace(admin: Client, name: str, labels: Mapping[str, str] | None = None) -> None:
    """A namespace with the ``default`` ServiceAccount (which the absent controller-manager would add)."""
    admin.apply("/api/v1/namespaces", {"metadata": {"name": name, "labels": dict(labels or {})}})
    admin.apply(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}})


def bind_cluster_role(admin: Client, namespace: str, service_account: str, role: str) -> Reply:
    return admin.apply(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": f"e2e:{namespace}:{service_account}:{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    )


def service_account_token(admin: Client, namespace: str, name: str, seconds: int = TOKEN_SECONDS) -> str:
    """A bound token from the TokenRequest API (what a pod's projected token would be)."""
    reply = admin.ok(
        Request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
    )
    token: str = reply.body["status"]["token"]
    return token


def service_account(admin: Client, namespace: str, name: str, cluster_role: str | None) -> Client:
    """A ServiceAccount (namespace created if needed), optionally bound cluster-wide, and its client."""
    ensure_namespace(admin, namespace)
    admin.apply(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
    if cluster_role is not None:
        bind_cluster_role(admin, namespace, name, cluster_role)
    return Client(
        f"system:serviceaccount:{namespace}:{name}",
        admin.target,
        service_account_token(admin, namespace, name),
    )


def kubeconfig(target: cluster.Target, user: str, token: str, path: Path) -> Path:
    """A kubeconfig file for ``user`` with a bearer token (for kubectl in the demo)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": target.server, "certificate-authority": str(target.ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "e2e", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
