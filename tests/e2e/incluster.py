"""The guard as ``make e2e-kind`` deploys it: a Deployment in the cluster, not a process of the suite.

On an existing cluster (``AGENT_GUARD_E2E_KUBECONFIG``) the suite starts no guard and registers
nothing: ``tests/e2e/kind.sh`` has applied ``manifests/overlays/kind`` (Deployment ``agent-guard`` in
``agent-guard-system`` and the ValidatingWebhookConfiguration rendered from the same policy), and
``up`` checks that registration against the policy in ``rules/`` before any scenario runs. The suite
creates its identities itself (the agent ``mcp-system/mcp-k8s-go`` and the controller stand-in, both
bound to ``cluster-admin``); the admin is the kubeconfig's identity.

The scenarios that start or stop local guard processes adapt through the deployed Deployment, and
restore it afterwards:

- dry-run mode (``in_mode``): ``--mode=<mode>`` appended to the container's args, wait for the
  rollout, then for the apiserver to get dry-run answers; the decision log is read from the pods'
  logs (``guard_logs``);
- blast radius (``admission_unreachable``): the registration's Service port pointed at a dead one
  until the apiserver cannot reach ``/validate`` (``failurePolicy: Fail`` then answers the agent with
  HTTP 500) while ``/authorize`` still answers; ``scaled_down`` (the Deployment at 0) takes both down;
- other policy files, ``serve`` arguments or replica count for one scenario (``reconfigured``: the
  delete budget with a small limit on one replica, approvals): the policy ConfigMap's data replaced
  and the pods rolled out, everything put back as found afterwards.

The cluster's apiserver flags were fixed when it was created; ``make e2e-kind`` wires the authorizer in
(``kind-config.yaml``) and says so (``AGENT_GUARD_E2E_AUTHORIZER=1``). Without it ``authorizer`` stays
False: the attack rows are expected from admission
and the authorizer's own scenarios skip (``conftest.require_authorizer``).

Every wait ends on an observation of the apiserver's behaviour (the agent's server-side dry-run
owner patch of ``e2e-probe``, several times in a row, so that both replicas have answered), not on
the Deployment's status alone. ``make e2e-kind`` runs all of it (docs/kind.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from tests import reviews, serving
from tests.e2e import cluster, kube, stack
from webhook import manifests, policy

DEPLOYMENT = "agent-guard"
CONTAINER = "agent-guard"
POD_SELECTOR = "app.kubernetes.io/name=agent-guard,app.kubernetes.io/component=webhook"
TLS_CERTS = reviews.ROOT / "manifests" / "components" / "tls-secret" / "certs"  # make deploy-certs
ROLLOUT_TIMEOUT_SECONDS = 240.0
PROBE_TIMEOUT_SECONDS = 120.0
PROBES_IN_A_ROW = 6  # the Service balances across replicas; six answers in a row reach both
FIELD_MANAGER = "agent-guard-e2e"
RECONFIGURED = "agent-guard.io/e2e-reconfigured"  # a pod-template annotation: rolls out new pods
UNREACHABLE_PORT = 1  # a Service port the guard's Service does not have: admission cannot reach it
DENIED_BY_US = f'admission webhook "{manifests.WEBHOOK_NAME}" denied the request'


def probe(agent: kube.Client) -> kube.Reply:
    """The agent's server-side dry-run owner patch of a namespace: judged by admission, changes nothing."""
    return agent.request(stack.probe_request())


def enforcing_answer(reply: kube.Reply) -> bool:
    return reply.status == 403 and DENIED_BY_US in reply.message and "[namespace-delete]" in reply.message


def dry_run_answer(reply: kube.Reply) -> bool:
    return reply.status == 200 and any(w.startswith("[namespace-delete] would deny") for w in reply.warnings)


def unreachable_answer(reply: kube.Reply) -> bool:
    """No replica answers: admission fails closed, or, where the apiserver also asks the guard's
    authorizer (the real node), the authorizer's failure comes first."""
    return reply.status == 500 and (
        "failed calling webhook" in reply.message or "/authorize" in reply.message
    )


class DeployedWebhook(stack.Webhook):
    """The registration kind.sh applied. The suite never repoints or deletes it: it is not the suite's."""

    def point_at(self, guard: serving.Guard) -> None:
        raise stack.StackError(
            f"the webhook is the deployed one ({manifests.CONFIGURATION_NAME}, service "
            f"{self.policy.guard_namespace}/{DEPLOYMENT}); local guard processes (port {guard.port}) cannot "
            "be registered on an existing cluster"
        )

    def remove(self) -> None:
        """Left in place: it belongs to the deployment, not to this session."""


@dataclass
class InClusterStack(stack.Stack):
    """A ``stack.Stack`` whose guard is the Deployment in ``policy.guard_namespace``."""

    deployment_path: str = ""
    events: list[str] = field(default_factory=list)  # what the suite did to the Deployment, for diagnostics
    registration: dict[str, Any] = field(default_factory=dict)  # the deployed configuration, as found

    def guard_output(self) -> str:
        return self.guard_logs()

    def reinstall_webhook(self) -> None:
        """The deployed configuration as it was found (a scenario deleted or changed it), then wait
        for denials."""
        body = {key: value for key, value in self.registration.items() if key != "status"}
        body["metadata"] = {
            key: value
            for key, value in self.registration.get("metadata", {}).items()
            if key in ("name", "labels", "annotations")
        }
        path = f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}"
        existing = self.admin.request(kube.Request("GET", path))
        if existing.status == 404:
            self.admin.ok(kube.Request("POST", stack.WEBHOOK_CONFIGURATIONS, body))
        elif existing.body.get("webhooks") != body.get("webhooks"):
            body["metadata"]["resourceVersion"] = existing.body["metadata"]["resourceVersion"]
            self.admin.ok(kube.Request("PUT", path, body))
        self.wait_for(enforcing_answer, "get enforcing answers from the deployed guard again")

    # --- observing the apiserver ----------------------------------------------------------------

    def wait_for(
        self, answer: Callable[[kube.Reply], bool], what: str, timeout: float = PROBE_TIMEOUT_SECONDS
    ) -> None:
        """Until ``PROBES_IN_A_ROW`` probes in a row get ``answer``."""
        deadline = time.monotonic() + timeout
        in_a_row, last = 0, None
        while time.monotonic() < deadline:
            last = probe(self.agent)
            in_a_row = in_a_row + 1 if answer(last) else 0
            if in_a_row >= PROBES_IN_A_ROW:
                return
            time.sleep(0.2 if in_a_row else 1.0)
        raise stack.StackError(f"the apiserver did not {what} within {timeout:.0f}s (last probe: {last})")

    def enforcing(self) -> None:
        """The deployed guard denies (one probe when it already does)."""
        if not enforcing_answer(probe(self.agent)):
            self.wait_for(enforcing_answer, "get enforcing answers from the deployed guard")

    def replica_answer(self, pod: str) -> dict[str, Any]:
        """One replica's own answer to the probe (the agent's namespace delete), posted to that pod
        through the apiserver's pod proxy: the Service's answers can all come from one replica, since
        the apiserver keeps its webhook connection alive."""
        request = reviews.admission_request(
            "DELETE",
            "namespaces",
            name=stack.PROBE_NAMESPACE,
            old={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": stack.PROBE_NAMESPACE}},
        )
        path = f"/api/v1/namespaces/{self.policy.guard_namespace}/pods/https:{pod}:8443/proxy/validate"
        reply = self.admin.request(kube.Request("POST", path, reviews.review(request)))
        response: dict[str, Any] = reply.body.get("response", {}) if reply.status == 200 else {}
        return response

    def wait_for_every_replica(self, mode: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        """Until every running replica answers the probe in ``mode`` (enforce: denied; dry-run:
        allowed with a would-deny warning), asked one pod at a time."""
        deadline = time.monotonic() + timeout
        for pod in self.pods():
            name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
                continue
            while True:
                answer = self.replica_answer(name)
                enforcing = answer.get("allowed") is False and "[namespace-delete]" in str(answer)
                warned = answer.get("allowed") is True and "[namespace-delete] would deny" in str(answer)
                if (mode == "enforce" and enforcing) or (mode == "dry-run" and warned):
                    break
                if time.monotonic() > deadline:
                    raise stack.StackError(f"guard pod {name} did not answer in {mode} mode: {answer}")
                time.sleep(0.5)

    def wait_for_rbac_view(self, kind: str, resource_version: str) -> None:
        """Until every ready replica's RBAC view has seen ``kind`` at ``resource_version``, read from each
        pod's ``/readyz`` through the apiserver's pod proxy (ingress on 8443 is open to any source)."""
        deadline = time.monotonic() + stack.RBAC_VIEW_TIMEOUT_SECONDS
        namespace = self.policy.guard_namespace
        for pod in self.pods():
            name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
                continue
            path = f"/api/v1/namespaces/{namespace}/pods/https:{name}:8443/proxy/readyz"
            while True:
                reply = self.admin.request(kube.Request("GET", path))
                if reply.status in (200, 503) and stack.view_has(reply.body, kind, resource_version):
                    break
                if time.monotonic() > deadline:
                    raise stack.StackError(f"guard pod {name} did not see {kind} {resource_version}: {reply}")
                time.sleep(0.1)

    @contextlib.contextmanager
    def extra_guard(self, *arguments: str, ready: bool = True) -> Iterator[serving.Guard]:
        raise stack.StackError(
            f"no local guard processes on an existing cluster (asked for one with {list(arguments)}); "
            "use InClusterStack.in_mode or scaled_down"
        )

    # --- the Deployment -----------------------------------------------------------------------

    def client_ca_argument(self) -> str:
        """The deployed guard's ``--client-ca`` (it serves reviews only to the apiserver's client
        certificate: ``manifests/components/client-auth``), or "" when it has none."""
        containers = self.deployment()["spec"]["template"]["spec"]["containers"]
        args = next(c.get("args", []) for c in containers if c["name"] == CONTAINER)
        return next((a.partition("=")[2] for a in args if a.startswith("--client-ca=")), "")

    def deployment(self) -> dict[str, Any]:
        return self.admin.ok(kube.Request("GET", self.deployment_path)).body

    def pods(self) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{self.policy.guard_namespace}/pods"
        reply = self.admin.ok(kube.Request("GET", path, query=(("labelSelector", POD_SELECTOR),)))
        items: list[dict[str, Any]] = reply.body.get("items", [])
        return items

    def wait_for_rollout(self, replicas: int) -> None:
        """Every replica updated and available, and no older pod left, not even a terminating one.

        A terminating replica still answers on the apiserver's keep-alive connections during its
        preStop sleep, so a mode switch is only complete once those pods are gone.
        """
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_SECONDS
        status: dict[str, Any] = {}
        pods: list[str] = []
        while time.monotonic() < deadline:
            found = self.deployment()
            status = found.get("status", {})
            pods = [p["metadata"]["name"] for p in self.pods()]
            if (
                status.get("observedGeneration", 0) >= found["metadata"]["generation"]
                and status.get("replicas", 0) == replicas
                and status.get("updatedReplicas", 0) == replicas
                and status.get("availableReplicas", 0) == replicas
                and len(pods) == replicas
            ):
                return
            time.sleep(1.0)
        raise stack.StackError(
            f"deployment {DEPLOYMENT} did not roll out to {replicas} replica(s) within "
            f"{ROLLOUT_TIMEOUT_SECONDS:.0f}s; status {status}, pods {pods}"
        )

    def _patch_args(self, index: int, args: Sequence[str]) -> None:
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": f"/spec/template/spec/containers/{index}/name", "value": CONTAINER},
            {"op": "replace", "path": f"/spec/template/spec/containers/{index}/args", "value": list(args)},
        ]
        self.admin.ok(
            kube.Request(
                "PATCH",
                self.deployment_path,
                operations,
                (("fieldManager", FIELD_MANAGER),),
                content_type="application/json-patch+json",
            )
        )

    @contextlib.contextmanager
    def in_mode(self, mode: str) -> Iterator[None]:
        """The deployed guard restarted with ``--mode=<mode>``; its original args restored on exit."""
        found = self.deployment()
        containers = found["spec"]["template"]["spec"]["containers"]
        index = next(i for i, c in enumerate(containers) if c["name"] == CONTAINER)
        original = list(containers[index].get("args", []))
        replicas = int(found["spec"].get("replicas", 1))
        changed = [a for a in original if not a.startswith("--mode")] + [f"--mode={mode}"]
        self.events.append(f"args -> {changed}")
        self._patch_args(index, changed)
        try:
            self.wait_for_rollout(replicas)
            if mode == "dry-run":
                self.wait_for(dry_run_answer, "get dry-run answers from the deployed guard")
            yield
        finally:
            self.events.append(f"args -> {original} (restored)")
            self._patch_args(index, original)
            self.wait_for_rollout(replicas)
            self.enforcing()

    @contextlib.contextmanager
    def scaled_down(self) -> Iterator[None]:
        """No replica running: the apiserver cannot reach the guard. Scaled back on exit."""
        replicas = int(self.deployment()["spec"].get("replicas", 1))
        self.events.append(f"scaled {replicas} -> 0")
        self._scale(0)
        try:
            self.wait_for_rollout(0)
            self.wait_for(unreachable_answer, "fail to reach the scaled-down guard")
            yield
        finally:
            self.events.append(f"scaled 0 -> {replicas} (restored)")
            self._scale(replicas)
            self.wait_for_rollout(replicas)
            self.enforcing()

    @contextlib.contextmanager
    def admission_unreachable(self) -> Iterator[None]:
        """Only ``/validate`` down: the registration's Service port pointed at one nothing listens on,
        while the replicas keep serving ``/authorize`` (the authorizer dials the Service's ClusterIP
        on its real port). Restored
        on exit, as found."""
        path = f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}"
        hooks = self.admin.ok(kube.Request("GET", path)).body["webhooks"]
        ports = [hook["clientConfig"]["service"].get("port", 443) for hook in hooks]

        def patch(to: list[int]) -> None:
            operations = [
                {"op": "add", "path": f"/webhooks/{index}/clientConfig/service/port", "value": port}
                for index, port in enumerate(to)
            ]
            self.admin.ok(kube.Request("PATCH", path, operations, content_type="application/json-patch+json"))

        self.events.append(f"webhook service port {ports} -> {UNREACHABLE_PORT}")
        patch([UNREACHABLE_PORT] * len(ports))
        try:
            self.wait_for(unreachable_answer, "fail to reach the guard's /validate")
            yield
        finally:
            self.events.append(f"webhook service port {UNREACHABLE_PORT} -> {ports} (restored)")
            patch(ports)
            self.enforcing()

    @contextlib.contextmanager
    def reconfigured(
        self,
        policy_files: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        replicas: int | None = None,
    ) -> Iterator[None]:
        """The deployed guard rolled out with other policy files (the data of its policy ConfigMap),
        more ``serve`` arguments and/or another replica count, for one scenario (the budget with a
        small limit, approvals); everything restored on exit, the guard enforcing the shipped policy.

        A changed ConfigMap would reach the running pods only when the kubelet syncs the volume (up to
        a minute); a rollout (an annotation on the pod template) starts pods that read it at once.
        """
        namespace = self.policy.guard_namespace
        configmap = f"/api/v1/namespaces/{namespace}/configmaps/{manifests.POLICY_CONFIGMAP}"
        original_files = dict(self.admin.ok(kube.Request("GET", configmap)).body.get("data") or {})
        found = self.deployment()
        containers = found["spec"]["template"]["spec"]["containers"]
        index = next(i for i, c in enumerate(containers) if c["name"] == CONTAINER)
        original_args = list(containers[index].get("args", []))
        original_replicas = int(found["spec"].get("replicas", 1))

        def configure(files: Mapping[str, str], args: Sequence[str], count: int, stamp: str | None) -> None:
            data = [{"op": "replace", "path": "/data", "value": dict(files)}]
            self.admin.ok(kube.Request("PATCH", configmap, data, content_type="application/json-patch+json"))
            self._patch_args(index, args)
            template = {"spec": {"template": {"metadata": {"annotations": {RECONFIGURED: stamp}}}}}
            self.admin.ok(
                kube.Request(
                    "PATCH",
                    self.deployment_path,
                    template,
                    (("fieldManager", FIELD_MANAGER),),
                    content_type="application/merge-patch+json",
                )
            )
            self._scale(count)
            self.wait_for_rollout(count)
            self.wait_for(enforcing_answer, "get answers from the rolled-out guard")

        count = original_replicas if replicas is None else replicas
        args = [*original_args, *extra_args]
        self.events.append(
            f"reconfigured: files {sorted(policy_files or original_files)}, args {args}, {count}"
        )
        try:
            configure(policy_files or original_files, args, count, str(time.time()))
            yield
        finally:
            self.events.append("reconfigured back as found")
            configure(original_files, original_args, original_replicas, None)

    def _scale(self, replicas: int) -> None:
        self.admin.ok(
            kube.Request(
                "PATCH",
                f"{self.deployment_path}/scale",
                {"spec": {"replicas": replicas}},
                (("fieldManager", FIELD_MANAGER),),
                content_type="application/merge-patch+json",
            )
        )

    # --- logs ---------------------------------------------------------------------------------

    def guard_logs(self, tail: int | None = None) -> str:
        """The logs of the guard's current pods (decision lines included), one after the other."""
        namespace = self.policy.guard_namespace
        parts = []
        for pod in self.pods():
            name = pod["metadata"]["name"]
            query = [("container", CONTAINER)] + ([("tailLines", str(tail))] if tail else [])
            reply = self.admin.request(
                kube.Request(
                    "GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log", query=query, accept="*/*"
                )
            )
            text = reply.text if reply.status in (200, 204) else f"(logs unavailable: {reply})"
            parts.append(f"--- pod {namespace}/{name}:\n{text}\n")
        return "".join(parts)

    def diagnostics(self, lines: int = 40) -> str:
        parts = [self.target.diagnostics()]
        try:
            status = self.deployment().get("status", {})
            parts.append(f"--- deployment {DEPLOYMENT}: status {status}; the suite did: {self.events}\n")
            parts.append(self.guard_logs(tail=lines))
        except (AssertionError, OSError, urllib3.exceptions.HTTPError) as exc:
            parts.append(f"--- deployment {DEPLOYMENT}: could not be read ({exc})\n")
        return "".join(parts)


def check_registration(admin: kube.Client, loaded: policy.Policy) -> dict[str, Any]:
    """The deployed webhook configuration, or StackError saying how to deploy or refresh it."""
    path = f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}"
    reply = admin.request(kube.Request("GET", path))
    if reply.status == 404:
        raise stack.StackError(
            f"no ValidatingWebhookConfiguration {manifests.CONFIGURATION_NAME!r} in the cluster: deploy the "
            "guard first (make e2e-kind does: kubectl apply --server-side -k manifests/overlays/kind)"
        )
    if reply.status != 200:
        raise stack.StackError(f"reading the webhook configuration failed: {reply}")
    hooks = [h for h in reply.body.get("webhooks", []) if h.get("name") == manifests.WEBHOOK_NAME]
    if not hooks or hooks[0].get("matchConditions") != manifests.match_conditions(loaded):
        raise stack.StackError(
            f"the deployed {manifests.CONFIGURATION_NAME!r} selects other agents than {reviews.RULES} "
            "(deployed from another policy?): run make manifests and re-apply manifests/overlays/kind"
        )
    return reply.body


@contextlib.contextmanager
def up(target: cluster.Target, workdir: Path) -> Iterator[InClusterStack]:
    """The identities, checked against the deployed guard; nothing of the guard's is changed or removed."""
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = policy.load(reviews.RULES)
    admin = kube.admin(target)
    configuration = check_registration(admin, loaded)
    agent = kube.service_account(admin, stack.AGENT_NAMESPACE, stack.AGENT_NAME, "cluster-admin")
    controller = kube.service_account(
        admin, stack.CONTROLLER_NAMESPACE, stack.CONTROLLER_NAME, "cluster-admin"
    )
    kube.ensure_namespace(admin, stack.PROBE_NAMESPACE)
    ca_bundle = str(configuration["webhooks"][0]["clientConfig"].get("caBundle", ""))
    deployed = InClusterStack(
        target=target,
        workdir=workdir,
        cert_dir=TLS_CERTS,
        policy=loaded,
        admin=admin,
        agent=agent,
        controller=controller,
        webhook=DeployedWebhook(admin, agent, loaded, ca_bundle),
        guard=None,
        guards=[],
        authorizer=target.guard_authorizer,
        registration=configuration,
        deployment_path=f"/apis/apps/v1/namespaces/{loaded.guard_namespace}/deployments/{DEPLOYMENT}",
    )
    deployed.wait_for_rollout(int(deployed.deployment()["spec"].get("replicas", 1)))
    deployed.wait_for(enforcing_answer, "get enforcing answers from the deployed guard")
    yield deployed
