"""The product wired into a cluster: guard processes, their two registrations, the identities.

Shared by the pytest fixtures and ``make demo``. One guard process serves both endpoints, registered
the way ``webhook.manifests`` renders them from the shipped policy:

- ``/authorize`` through the apiserver's ``AuthorizationConfiguration`` (Node, the guard for agents
  only with ``failurePolicy: Deny``, then RBAC). The apiserver reads it once, at start-up, so the
  guard's port is chosen and held before the cluster starts (``prepared``), and every guard that must
  answer ``/authorize`` later (dry-run mode, the enforcing guard again) is restarted on that port.
  The apiserver caches the authorizer's answers; the suite renders a short ``unauthorizedTTL`` and
  every restart or stop waits it out, so no scenario gets an answer the previous guard gave.
- ``/validate`` through the ValidatingWebhookConfiguration (rules from the guard families,
  matchConditions from the agent selector), pointed by URL at one guard process at a time. Pointing
  it elsewhere (``extra_guard``: a guard that is then stopped) or restarting the guard behind it
  waits until the guard has really answered a probe, so no scenario races the apiserver's informer.

Each scenario's fixture puts the stack into the state it needs (``Stack.enforcing``,
``Stack.guard_mode``, ``Stack.guard_stopped``) and leaves it there: the next fixture changes only what
differs, so a restart happens only when the mode really changes.

The guard watches the cluster's RBAC as shipped (``--rbac-source``): the suite gives it a read-only
ServiceAccount of its own, bound to the ClusterRole of ``manifests/base/rbac.yaml``, and a kubeconfig
with that account's token (``rbac_source``); every guard the suite starts gets it.

On an existing cluster (kind) none of this applies: ``incluster.InClusterStack`` uses the deployed guard,
and that cluster's apiserver does not call ``/authorize`` (``Stack.authorizer`` is False).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml

from tests import reviews, serving
from tests.e2e import cluster, kube
from tests.e2e.controlplane import binaries
from webhook import clientauth, manifests, policy

AGENT_NAMESPACE, AGENT_NAME = "mcp-system", "mcp-k8s-go"
CONTROLLER_NAMESPACE, CONTROLLER_NAME = "kube-system", "e2e-controller"
PROBE_NAMESPACE = "e2e-probe"
REGISTRATION_TIMEOUT_SECONDS = 30.0
RBAC_VIEW_TIMEOUT_SECONDS = 60.0
# The apiserver caches the authorizer's "denied" and "no opinion" answers this long (shipped: 10s).
AUTHORIZER_CACHE_SECONDS = 1
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
GUARD_ACCOUNT = "agent-guard"
SHIPPED_RBAC = reviews.ROOT / "manifests" / "base" / "rbac.yaml"
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"


def probe_request() -> kube.Request:
    """A request only admission judges, denied by ``namespace-delete``, that changes nothing: a
    server-side dry-run patch giving ``e2e-probe`` an owner. (A namespace DELETE no longer reaches
    admission: the authorizer denies it first, as ``kubectl auth can-i`` should say.)"""
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "e2e-probe-owner",
        "uid": "00000000-0000-0000-0000-00000000e2e0",
    }
    return kube.Request(
        "PATCH",
        f"/api/v1/namespaces/{PROBE_NAMESPACE}",
        {"metadata": {"ownerReferences": [owner]}},
        content_type="application/merge-patch+json",
    ).dry_run()


class StackError(Exception):
    """The guard could not be set up against the cluster; the message says what happened."""


def make_certs(cert_dir: Path) -> str:
    """CA + serving certificate through the real ``agent-guard certs``; returns the caBundle."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out", str(cert_dir)],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"agent-guard certs failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


class Webhook:
    """The guard's ValidatingWebhookConfiguration, pointed at one guard process at a time."""

    def __init__(self, admin: kube.Client, agent: kube.Client, loaded: policy.Policy, ca_bundle: str) -> None:
        self.admin, self.agent, self.policy, self.ca_bundle = admin, agent, loaded, ca_bundle
        self.current: serving.Guard | None = None

    def rendered(self, guard: serving.Guard) -> dict[str, Any]:
        url = self.admin.target.guard_url(guard.port)
        return manifests.validating_webhook_configuration(self.policy, self.ca_bundle, url=url)

    def point_at(self, guard: serving.Guard) -> None:
        """Register ``guard`` and return once the apiserver really calls it."""
        if self.current is guard:
            return
        desired = self.rendered(guard)
        path = f"{WEBHOOK_CONFIGURATIONS}/{desired['metadata']['name']}"
        existing = self.admin.request(kube.Request("GET", path))
        if existing.status == 404:
            self.admin.ok(kube.Request("POST", WEBHOOK_CONFIGURATIONS, desired))
        else:
            desired["metadata"]["resourceVersion"] = existing.body["metadata"]["resourceVersion"]
            self.admin.ok(kube.Request("PUT", path, desired))
        self.current = None
        self._wait_until_called(guard)
        self.current = guard

    def _wait_until_called(self, guard: serving.Guard) -> None:
        # Routed to the webhook, changes nothing; counted in the guard's /validate lines only (the
        # same guard may also answer the apiserver's authorizer for the same request).
        probe = probe_request()

        def calls() -> int:
            return sum(
                1
                for d in decisions(guard.output())
                if d.get("endpoint") == "validate" and d.get("name") == PROBE_NAMESPACE
            )

        deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
        reply = None
        while time.monotonic() < deadline:
            before = calls()
            reply = self.agent.request(probe)
            for _ in range(10):
                if calls() > before:
                    return
                time.sleep(0.02)
            time.sleep(0.1)
        raise StackError(
            f"the apiserver did not call the guard on port {guard.port} within "
            f"{REGISTRATION_TIMEOUT_SECONDS:.0f}s (last probe: {reply}); guard log:\n{guard.output()}"
        )

    def reinstall(self, guard: serving.Guard) -> None:
        """Create the configuration again (after a scenario deleted it) and wait until it is used."""
        self.current = None
        self.point_at(guard)

    def remove(self) -> None:
        name = manifests.CONFIGURATION_NAME
        self.admin.request(kube.Request("DELETE", f"{WEBHOOK_CONFIGURATIONS}/{name}"))
        self.current = None


# The guard writes decision lines from a thread of its own, within a few milliseconds of its answer
# (webhook.decisionlog.Writer); a test reading what its request left in the log waits this long.
LOG_LAG_SECONDS = 0.1


def decisions(output: str | Callable[[], str]) -> list[dict[str, Any]]:
    """The decision lines (one JSON object per review) in a guard's output, oldest first.

    Given the function that reads the output, waits LOG_LAG_SECONDS first, so the lines of the
    requests just answered are there (and a check that a line is absent is not passed early).
    """
    if callable(output):
        time.sleep(LOG_LAG_SECONDS)
        output = output()
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def rbac_source(admin: kube.Client, namespace: str, directory: Path) -> tuple[str, ...]:
    """The guard's own read-only identity, as the shipped manifests make it, and the ``serve`` arguments
    that watch RBAC through it: ServiceAccount ``agent-guard`` in the guard's namespace, the ClusterRole
    and ClusterRoleBinding of ``manifests/base/rbac.yaml`` (get/list/watch on the four RBAC kinds), a
    TokenRequest token in a kubeconfig. Proves the shipped ClusterRole is all the guard needs."""
    admin.apply(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": GUARD_ACCOUNT}})
    for doc in yaml.safe_load_all(SHIPPED_RBAC.read_text()):
        if doc["kind"] == "ClusterRoleBinding":
            for subject in doc["subjects"]:
                subject["namespace"] = namespace
        admin.apply(f"{RBAC_API}/{doc['kind'].lower()}s", doc)
    token = kube.service_account_token(admin, namespace, GUARD_ACCOUNT)
    directory.mkdir(parents=True, exist_ok=True)
    path = kube.kubeconfig(
        admin.target, f"system:serviceaccount:{namespace}:{GUARD_ACCOUNT}", token, directory / "kubeconfig"
    )
    return ("--rbac-source", f"kubeconfig:{path}")


def view_has(readyz: Mapping[str, Any], kind: str, resource_version: str) -> bool:
    """Whether a guard's ``/readyz`` answer says its RBAC view has seen ``kind`` at ``resource_version``
    (a guard without an RBAC source judges by names: nothing to wait for)."""
    view = readyz.get("rbac")
    if not isinstance(view, Mapping):
        return True
    seen = (view.get("resourceVersions") or {}).get(kind)
    return seen is not None and int(seen) >= int(resource_version)


def readyz(guard: serving.Guard) -> dict[str, Any]:
    """A local guard's ``/readyz`` answer, 503 (not synced, draining) included."""
    try:
        with urllib.request.urlopen(f"{guard.url}/readyz", context=guard.context(), timeout=2) as answer:
            found: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as exc:
        found = json.load(exc)
    return found


@dataclass
class Plan:
    """What exists before the apiserver starts: the guard's certificates and port, the authorizer files."""

    workdir: Path
    cert_dir: Path
    ca_bundle: str
    policy: policy.Policy
    port: int
    authorization_config: Path
    hold: socket.socket  # bound (not listening): nothing else gets the port until the guard starts
    # The client certificate the apiserver presents to every webhook (``agent-guard apiserver-client``),
    # for guards started with ``--client-ca`` (``client_ca``); guards without it never ask for it.
    admission_config: Path | None = None
    client_dir: Path | None = None

    @property
    def client_ca(self) -> Path | None:
        return self.client_dir / clientauth.CA_FILE if self.client_dir is not None else None

    def release_port(self) -> None:
        self.hold.close()


def make_apiserver_client(directory: Path) -> Path:
    """The apiserver's webhook client certificate and admission configuration, through the real tool."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "apiserver-client", "--out", str(directory), "--host", "*"],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"agent-guard apiserver-client failed ({result.returncode}): {result.stderr.strip()}"
        )
    return directory / clientauth.CONFIG_FILE


def render_authorizer(
    loaded: policy.Policy, ca_bundle: str, port: int, directory: Path, client_dir: Path | None = None
) -> Path:
    """The AuthorizationConfiguration + kubeconfig as shipped, but with the suite's short cache TTL
    (and the apiserver's client certificate from ``client_dir``, for a guard with ``--client-ca``)."""
    directory.mkdir(parents=True, exist_ok=True)
    client_cert = None
    if client_dir is not None:
        client_cert = (str(client_dir / clientauth.CERT_FILE), str(client_dir / clientauth.KEY_FILE))
    files = manifests.authorization_files(
        loaded,
        url=cluster.guard_url(port),
        ca_bundle=ca_bundle,
        kubeconfig_path=str(directory / manifests.KUBECONFIG_FILE),
        unauthorized_ttl=f"{AUTHORIZER_CACHE_SECONDS}s",
        client_cert=client_cert,
        kubernetes=binaries.kubernetes_version(),  # the release under test (make e2e-matrix)
    )
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory / manifests.CONFIG_FILE


@contextlib.contextmanager
def prepared(workdir: Path) -> Iterator[Plan]:
    """Certificates, the guard's port (held until ``up`` starts the guard) and the authorizer files."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "guard-certs"
    ca_bundle = make_certs(cert_dir)
    loaded = policy.load(reviews.RULES)
    client_dir = workdir / "apiserver-client"
    admission_config = make_apiserver_client(client_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hold:
        hold.bind(("127.0.0.1", 0))
        port: int = hold.getsockname()[1]
        config = render_authorizer(loaded, ca_bundle, port, workdir / "authz", client_dir)
        yield Plan(workdir, cert_dir, ca_bundle, loaded, port, config, hold, admission_config, client_dir)


@dataclass
class Stack:
    """A cluster with the guard registered, and the identities the scenarios act as.

    Locally (``up``) the guard is a process of the suite on the authorizer's port; on an existing
    cluster (``incluster.InClusterStack``) it is the deployed one, ``guard`` is None and the methods
    that start or stop local guard processes raise ``StackError``.
    """

    target: cluster.Target
    workdir: Path
    cert_dir: Path
    policy: policy.Policy
    admin: kube.Client
    agent: kube.Client
    controller: kube.Client
    webhook: Webhook
    guard: serving.Guard | None  # the guard on ``port``: /authorize and /validate; None: in the cluster
    guards: list[serving.Guard] = field(default_factory=list)  # every guard started, for diagnostics
    # Whether the apiserver asks the guard's /authorize about agents (the local control plane is started
    # with ``Plan.authorization_config``; an existing cluster's apiserver flags are fixed at creation).
    authorizer: bool = False
    port: int = 0  # the port the authorizer calls (fixed at the apiserver's start); 0: no local guard
    arguments: tuple[str, ...] = ()  # the extra ``agent-guard serve`` arguments of ``guard``
    base_arguments: tuple[str, ...] = ()  # given to every guard started (the RBAC source)
    stopped_at: float = 0.0  # when a guard on ``port`` last stopped answering
    processes: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # closed by ``up``
    client_ca: Path | None = None  # verifies the apiserver's webhook client certificate (``Plan``)

    def local_guard(self) -> serving.Guard:
        """The guard process on the authorizer's port (the current one: restarts replace it)."""
        if self.guard is None:
            raise StackError("the guard runs in the cluster: there is no local guard process")
        return self.guard

    def start_guard(self, *arguments: str) -> serving.Guard:
        """``agent-guard serve <arguments>`` on the authorizer's port (nothing may be listening there)."""
        if not self.port:
            raise StackError("the guard runs in the cluster: no local guard can be started")
        log = self.workdir / f"agent-guard-{self.port}-{len(self.guards)}.log"
        guard = self.processes.enter_context(
            serving.running(
                self.workdir, self.cert_dir, *self.base_arguments, *arguments, port=self.port, log=log
            )
        )
        self.guards.append(guard)
        self.guard, self.arguments = guard, arguments
        return guard

    def stop_guard(self) -> None:
        """Stop the guard on the authorizer's port: agents now fail closed, on both endpoints."""
        guard = self.local_guard()
        if guard.process.poll() is None:
            guard.stop()
            self.stopped_at = time.monotonic()

    def wait_out_cached_answers(self) -> None:
        """Until the answers the apiserver cached from the stopped guard have expired."""
        remaining = self.stopped_at + AUTHORIZER_CACHE_SECONDS - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def restart_guard(self, *arguments: str) -> serving.Guard:
        """Replace the guard on the authorizer's port; return once the apiserver calls the new one."""
        self.stop_guard()
        guard = self.start_guard(*arguments)
        self.wait_out_cached_answers()
        self.webhook.point_at(guard)
        return guard

    def guard_mode(self, *arguments: str) -> serving.Guard:
        """The guard on the authorizer's port, running with ``arguments`` (e.g. ``--mode dry-run``),
        and the webhook pointing at it; restarted only when it is not already so."""
        guard = self.local_guard()
        if self.arguments != arguments or guard.process.poll() is not None:
            return self.restart_guard(*arguments)
        self.webhook.point_at(guard)  # a no-op unless a scenario pointed it elsewhere
        return guard

    def enforcing(self) -> None:
        """The enforcing guard on the authorizer's port, and the webhook pointing at it."""
        self.guard_mode()

    def guard_stopped(self) -> None:
        """No guard at all: both registrations point at the authorizer's port, where nothing listens."""
        guard = self.local_guard()
        if guard.process.poll() is None:
            self.webhook.point_at(guard)  # a no-op unless a scenario pointed it elsewhere
            self.stop_guard()
        self.wait_out_cached_answers()

    @contextlib.contextmanager
    def extra_guard(self, *arguments: str, ready: bool = True) -> Iterator[serving.Guard]:
        """Another ``agent-guard serve`` on another port, with the same certificates (and the RBAC
        source, unless ``arguments`` name another: the last ``--rbac-source`` wins).

        Only the ValidatingWebhookConfiguration can be pointed at it: the authorizer keeps calling
        the guard on ``port``. ``ready=False``: do not wait for ``/readyz`` (only ``/healthz``).
        """
        with serving.running(
            self.workdir, self.cert_dir, *self.base_arguments, *arguments, ready=ready
        ) as guard:
            self.guards.append(guard)
            yield guard

    def wait_for_rbac_view(self, kind: str, resource_version: str) -> None:
        """Until every running guard's RBAC view has seen ``kind`` at ``resource_version`` (an RBAC write
        of the admin's): a scenario that arms an account and then acts as the agent must not race the
        guard's watch, which follows the apiserver by milliseconds."""
        deadline = time.monotonic() + RBAC_VIEW_TIMEOUT_SECONDS
        for guard in self.guards:
            answer: dict[str, Any] = {}
            while guard.process.poll() is None:
                with contextlib.suppress(urllib.error.URLError, OSError, ssl.SSLError, ValueError):
                    answer = readyz(guard)
                    if view_has(answer, kind, resource_version):
                        break
                if time.monotonic() > deadline:
                    raise StackError(
                        f"the guard on port {guard.port} did not see {kind} resourceVersion "
                        f"{resource_version} within {RBAC_VIEW_TIMEOUT_SECONDS:.0f}s: {answer}"
                    )
                time.sleep(0.05)

    def diagnostics(self, lines: int = 40) -> str:
        parts = [self.target.diagnostics()]
        for guard in self.guards:
            state = "running" if guard.process.poll() is None else f"exited {guard.process.returncode}"
            tail = "\n".join(guard.output().splitlines()[-lines:])
            parts.append(f"--- agent-guard on port {guard.port} ({state}), log {guard.log}:\n{tail}\n")
        return "".join(parts)


@contextlib.contextmanager
def up(target: cluster.Target, plan: Plan, *guard_arguments: str) -> Iterator[Stack]:
    """The guard (``agent-guard serve`` + arguments) on the planned port, identities, the webhook.

    The cluster must have been started with ``plan.authorization_config``. Everything is undone on exit.
    """
    admin = kube.admin(target)
    agent = kube.service_account(admin, AGENT_NAMESPACE, AGENT_NAME, "cluster-admin")
    controller = kube.service_account(admin, CONTROLLER_NAMESPACE, CONTROLLER_NAME, "cluster-admin")
    kube.ensure_namespace(admin, PROBE_NAMESPACE)
    kube.ensure_namespace(admin, plan.policy.guard_namespace)
    source = rbac_source(admin, plan.policy.guard_namespace, plan.workdir / "guard-rbac")
    webhook = Webhook(admin, agent, plan.policy, plan.ca_bundle)
    with contextlib.ExitStack() as processes:
        stack = Stack(
            target,
            plan.workdir,
            plan.cert_dir,
            plan.policy,
            admin,
            agent,
            controller,
            webhook,
            guard=None,
            authorizer=True,
            port=plan.port,
            base_arguments=source,
            processes=processes,
            client_ca=plan.client_ca,
        )
        plan.release_port()
        guard = stack.start_guard(*guard_arguments)
        try:
            webhook.point_at(guard)
            yield stack
        finally:
            with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):  # the cluster may be gone
                webhook.remove()
