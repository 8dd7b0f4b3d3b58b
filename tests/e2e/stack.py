"""The product wired into a cluster: guard processes, their webhook registration, the identities.

Shared by the pytest fixtures and ``make demo``. The ValidatingWebhookConfiguration is always the one
``webhook.manifests`` renders from the shipped policy (rules from the guard families, matchConditions
from the agent selector), pointed by URL at one guard process at a time. Switching it to another guard
(dry-run mode, a guard that is then stopped) waits until that guard has really answered a probe, so
no scenario races the apiserver's informer.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from tests import reviews, serving
from tests.e2e import cluster, kube
from webhook import manifests, policy

AGENT_NAMESPACE, AGENT_NAME = "mcp-system", "mcp-k8s-go"
CONTROLLER_NAMESPACE, CONTROLLER_NAME = "kube-system", "e2e-controller"
PROBE_NAMESPACE = "e2e-probe"
REGISTRATION_TIMEOUT_SECONDS = 30.0
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


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
        # A server-side dry-run namespace delete by the agent: routed to the webhook, changes nothing.
        probe = kube.Request("DELETE", f"/api/v1/namespaces/{PROBE_NAMESPACE}").dry_run()
        mark = f'"name":"{PROBE_NAMESPACE}"'
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
        reply = None
        while time.monotonic() < deadline:
            before = guard.output().count(mark)
            reply = self.agent.request(probe)
            for _ in range(10):
                if guard.output().count(mark) > before:
                    return
                time.sleep(0.02)
            time.sleep(0.1)
        raise StackError(
            f"the apiserver did not call the guard on port {guard.port} within "
            f"{REGISTRATION_TIMEOUT_SECONDS:.0f}s (last probe: {reply}); guard log:\n{guard.output()}"
        )

    def remove(self) -> None:
        name = manifests.CONFIGURATION_NAME
        self.admin.request(kube.Request("DELETE", f"{WEBHOOK_CONFIGURATIONS}/{name}"))
        self.current = None


@dataclass
class Stack:
    """A cluster with the guard registered, and the identities the scenarios act as."""

    target: cluster.Target
    workdir: Path
    cert_dir: Path
    policy: policy.Policy
    admin: kube.Client
    agent: kube.Client
    controller: kube.Client
    webhook: Webhook
    guard: serving.Guard | None  # the enforcing guard the webhook normally points at; None: in the cluster
    guards: list[serving.Guard] = field(default_factory=list)

    @contextlib.contextmanager
    def extra_guard(self, *arguments: str) -> Iterator[serving.Guard]:
        """Another ``agent-guard serve`` with the same certificates (e.g. ``--mode dry-run``)."""
        with serving.running(self.workdir, self.cert_dir, *arguments) as guard:
            self.guards.append(guard)
            yield guard

    def local_guard(self) -> serving.Guard:
        """The enforcing guard process; an existing cluster's guard is deployed in it (``incluster``)."""
        if self.guard is None:
            raise StackError("the guard runs in the cluster: there is no local guard process")
        return self.guard

    def enforcing(self) -> None:
        """Point the webhook back at the enforcing guard (a no-op when it already is)."""
        self.webhook.point_at(self.local_guard())

    def diagnostics(self, lines: int = 40) -> str:
        parts = [self.target.diagnostics()]
        for guard in self.guards:
            state = "running" if guard.process.poll() is None else f"exited {guard.process.returncode}"
            tail = "\n".join(guard.output().splitlines()[-lines:])
            parts.append(f"--- agent-guard on port {guard.port} ({state}), log {guard.log}:\n{tail}\n")
        return "".join(parts)


@contextlib.contextmanager
def up(target: cluster.Target, workdir: Path, *guard_arguments: str) -> Iterator[Stack]:
    """Certificates, identities, the guard (``agent-guard serve`` + arguments) and its registration.

    Everything is undone on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "guard-certs"
    ca_bundle = make_certs(cert_dir)
    loaded = policy.load(reviews.RULES)
    admin = kube.Client("admin", target, target.admin_token)
    agent = kube.service_account(admin, AGENT_NAMESPACE, AGENT_NAME, "cluster-admin")
    controller = kube.service_account(admin, CONTROLLER_NAMESPACE, CONTROLLER_NAME, "cluster-admin")
    kube.ensure_namespace(admin, PROBE_NAMESPACE)
    kube.ensure_namespace(admin, loaded.guard_namespace)
    webhook = Webhook(admin, agent, loaded, ca_bundle)
    with serving.running(workdir, cert_dir, *guard_arguments) as guard:
        stack = Stack(target, workdir, cert_dir, loaded, admin, agent, controller, webhook, guard, [guard])
        try:
            webhook.point_at(guard)
            yield stack
        finally:
            with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):  # the cluster may be gone
                webhook.remove()
