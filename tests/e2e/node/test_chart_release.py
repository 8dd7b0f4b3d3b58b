"""The guard installed through its Helm chart on the real node: install, upgrade under load, uninstall.

Runs after every other node scenario (``conftest.pytest_collection_modifyitems``): it takes out the
kustomize-installed guard (the webhook configuration first, docs/upgrade.md), installs the chart in
its place with the same certificates, the Service's fixed ClusterIP (the apiserver's authorizer
kubeconfig names it) and the namespace left as it is (``namespace.create=false``), and afterwards
applies the kustomize objects again, so the node is as the session made it, also on failure.

- ``helm install``: the chart's guard rolls out and enforces.
- ``helm upgrade`` with a policy change (one more agent: a ServiceAccount outside ``mcp-system``,
  by exact username) while ``load.steady`` runs (24 requests/s): 0 failed admin requests, no attack
  admitted, agent requests failed closed reported, and the new agent's dry-run namespace delete is
  denied afterwards, 6 answers in a row (the kubelet's ConfigMap sync, then the guard's reload).
- ``helm uninstall``: the ValidatingWebhookConfiguration is deleted before every other object (the
  apiserver's audit log), and once the guard's pods are gone that agent's write is admitted: no
  configuration is left behind to fail it closed. The agents of ``rules/`` are still judged by the
  apiserver's authorizer, which this scenario does not remove (docs/upgrade.md step 2 is a file on
  the control plane), so the agent the chart alone added is the one that can show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import incluster, kube, stack
from tests.e2e.conftest import SceneFactory, unavailable
from tests.e2e.controlplane import node
from tests.e2e.node import load
from tests.e2e.node.test_availability import assert_no_harm
from tests.e2e.test_chart_lifecycle import CHART, RELEASE, WEBHOOK_PATH, audit_deletes, path_of
from tests.manifests import helm_binary, kustomize_binary

pytestmark = pytest.mark.e2e

GONE_TIMEOUT_SECONDS = 120.0


def kustomize_objects(target: node.NodeCluster) -> list[dict[str, Any]]:
    """The overlay the session installed, built again from the same copy (same certificates)."""
    text = kustomize_binary.build(kustomize_binary.ensure(), target.workdir / "install" / "overlay")
    return [d for d in yaml.safe_load_all(text) if d]


def remove_kustomize_install(admin: kube.Client, objects: list[dict[str, Any]]) -> None:
    """The webhook configuration first, then the rest; the namespace stays (the chart reuses it)."""
    ordered = sorted(objects, key=lambda o: o["kind"] != "ValidatingWebhookConfiguration")
    for obj in ordered:
        if obj["kind"] != "Namespace":
            reply = admin.request(kube.Request("DELETE", path_of(obj)))
            assert reply.status in (200, 202, 404), reply


def wait_until_no_guard_pods(cluster: incluster.InClusterStack) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
    while cluster.pods():
        assert time.monotonic() < deadline, [p["metadata"]["name"] for p in cluster.pods()]
        time.sleep(0.5)


def wait_in_a_row(client: kube.Client, request: kube.Request, answer: Callable[[kube.Reply], bool]) -> None:
    """Until ``incluster.PROBES_IN_A_ROW`` answers in a row (both replicas) are ``answer``."""
    deadline = time.monotonic() + incluster.PROBE_TIMEOUT_SECONDS
    in_a_row, last = 0, None
    while in_a_row < incluster.PROBES_IN_A_ROW:
        assert time.monotonic() < deadline, f"last answer: {last}"
        last = client.request(request)
        in_a_row = in_a_row + 1 if answer(last) else 0
        time.sleep(0.2 if in_a_row else 1.0)


def denied_by_namespace_delete(reply: kube.Reply) -> bool:
    return reply.status == 403 and "[namespace-delete]" in reply.message


def test_chart_install_upgrade_under_load_uninstall(
    cluster: incluster.InClusterStack,
    new_scene: SceneFactory,
    report: Callable[[str], None],
    tmp_path: Path,
) -> None:
    target = cluster.target
    assert isinstance(target, node.NodeCluster)
    try:
        helm_path = helm_binary.ensure()
    except helm_binary.BuildError as exc:
        unavailable(str(exc))
    admin = cluster.admin
    namespace = cluster.policy.guard_namespace
    config = kube.kubeconfig(target, "admin", target.admin_token, tmp_path / "kubeconfig")

    def helm(*args: str) -> str:
        return helm_binary.run(helm_path, tmp_path / "helm-home", args, kubeconfig=config)

    certificates = target.guard_certs
    values = [
        *("--namespace", namespace),
        *("--set", "namespace.create=false"),
        *("--set", f"service.clusterIP={node.GUARD_CLUSTER_IP}"),
        *("--set", "image.pullPolicy=Never"),  # loaded into the node by the suite, never pulled
        "--set-file",
        f"tls.cert={certificates}/tls.crt,tls.key={certificates}/tls.key,tls.ca={certificates}/ca.crt",
    ]
    scene = new_scene("chart")
    # An account the apiserver's authorizer (rendered from rules/) does not judge; the upgrade makes it
    # an agent for the chart's admission webhook only.
    newcomer_name = f"system:serviceaccount:{scene.namespace}:chart-agent"
    newcomer = kube.service_account(admin, scene.namespace, "chart-agent", "cluster-admin")
    attack = kube.Request("DELETE", f"/api/v1/namespaces/{stack.PROBE_NAMESPACE}").dry_run()
    write = kube.Request(
        "POST", f"/api/v1/namespaces/{scene.namespace}/configmaps", {"metadata": {"generateName": "w-"}}
    )
    objects = kustomize_objects(target)
    began = time.monotonic()
    try:
        remove_kustomize_install(admin, objects)
        wait_until_no_guard_pods(cluster)

        # 1. install
        helm("install", RELEASE, str(CHART), *values)
        cluster.wait_for_rollout(2)
        cluster.wait_for(incluster.enforcing_answer, "enforce with the chart's guard")
        assert newcomer.request(attack).status == 200, "not an agent yet"

        # 2. upgrade with a policy change under load
        load_namespace = new_scene("load-chart").namespace
        with load.steady(cluster, load_namespace) as tally:
            started = time.monotonic()
            helm(
                "upgrade",
                RELEASE,
                str(CHART),
                *values,
                "--set",
                f"policy.agents.usernames={{{newcomer_name}}}",
            )
            wait_in_a_row(newcomer, attack, denied_by_namespace_delete)
            in_force = time.monotonic() - started
        [hook] = admin.ok(kube.Request("GET", WEBHOOK_PATH)).body["webhooks"]
        assert f'"{newcomer_name}"' in hook["matchConditions"][0]["expression"]
        report(
            f"helm upgrade (one more agent) in force (6 answers in a row) after {in_force:.0f}s; "
            + tally.summary()
        )
        assert_no_harm(tally)
        assert tally.counts["agent"]["failed-closed"] == 0, tally.samples
        assert tally.counts["attack"]["failed-closed"] == 0, tally.samples

        # 3. uninstall: the webhook configuration first; then nothing left fails the agent's write.
        helm("uninstall", RELEASE, "--namespace", namespace)
        deleted = audit_deletes(target.audit_log)
        assert deleted and deleted[0] == "validatingwebhookconfigurations", deleted
        assert admin.request(kube.Request("GET", WEBHOOK_PATH)).status == 404
        wait_until_no_guard_pods(cluster)
        assert newcomer.request(write).status == 201, "after the uninstall the agent may write"
    finally:
        with_chart = time.monotonic() - began
        try:
            helm("uninstall", RELEASE, "--namespace", namespace, "--ignore-not-found")
        finally:
            node.install(admin, objects)
            node.wait_for_rollout(admin, 2)
            cluster.wait_for(incluster.enforcing_answer, "enforce again with the kustomize install")
    report(
        f"chart install, upgrade under load, uninstall: {with_chart:.0f}s; the kustomize install back "
        f"after {time.monotonic() - began - with_chart:.0f}s more"
    )
