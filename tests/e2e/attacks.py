"""What an injected agent tries, one row per request, each tagged with the guard that must stop it.

Every row prepares what it needs as the admin inside a fresh namespace (a ``Scene``) and returns the
request the identity under test then sends. The same row is replayed by the agent (denied), the agent
with ``dryRun=All`` (denied the same way), the admin and a cluster-admin controller (admitted), the
agent against a dry-run guard (admitted with warnings and audit annotations) and the agent against a
stopped guard (fails closed).

Rows name their guard by id, and the stage that stops the agent first: the authorizer (``/authorize``,
before the apiserver even reads the body) or admission (``/validate``, which sees the object). Only
guards registered in ``webhook.guards`` are expected to fire: a row whose guard is not there yet is
skipped locally and fails under ``CI`` (see ``conftest``).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import kube

IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: there is no kubelet
ADMITTED = (200, 201)
ADMISSION, AUTHORIZATION = "admission", "authorization"


def _no_rbac_view(kind: str, resource_version: str) -> None:
    """A scene without a guard to wait for."""


@dataclass(frozen=True)
class Scene:
    """A fresh namespace (with its ``default`` ServiceAccount) and a suffix for cluster-scoped names.

    ``rbac_seen(kind, resourceVersion)`` returns once the guard's RBAC view has an RBAC write of the
    admin's (``Stack.wait_for_rbac_view``): rows that arm an account wait for it before the agent acts.
    """

    admin: kube.Client
    namespace: str
    suffix: str
    guard_namespace: str
    rbac_seen: Callable[[str, str], None] = _no_rbac_view


@dataclass(frozen=True)
class Attack:
    id: str
    guard: str
    prepare: Callable[[Scene], kube.Request]
    dry_run: bool = True  # whether the request takes ?dryRun=All (CONNECT does not)
    admitted: tuple[int, ...] = ADMITTED  # statuses once admission lets it through
    stage: str = ADMISSION  # which of the guard's endpoints denies the agent first
    # The audit log keeps the request body (level Request), so ``agent-guard replay`` can judge it;
    # Secrets stay at Metadata level (their bodies are secret data), and replay cannot see their type.
    body_audited: bool = True

    def denied_by(self, authorizer: bool) -> str:
        """The stage that denies the row, given whether the apiserver calls the guard's authorizer
        (``Stack.authorizer``; without it, admission judges every row)."""
        return self.stage if authorizer else ADMISSION


# --- building blocks: everything benign except the one thing each row is about -----------------


def container(name: str = "app", **extra: Any) -> dict[str, Any]:
    """A container that passes the restricted Pod Security Standard."""
    security = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security.update(extra.pop("securityContext", {}))
    return {"name": name, "image": IMAGE, "securityContext": security, **extra}


def pod_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"automountServiceAccountToken": False, "containers": [container()]}
    spec.update(extra)
    return spec


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec(**spec)}


def deployment(name: str, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(**spec)},
        },
    }


def _pods(scene: Scene) -> str:
    return f"/api/v1/namespaces/{scene.namespace}/pods"


def _existing_pod(scene: Scene, name: str = "target") -> str:
    """A Pod object created by the admin (it never runs); returns its path."""
    scene.admin.ok(kube.Request("POST", _pods(scene), pod(name)))
    return f"{_pods(scene)}/{name}"


def _powerful_service_account(scene: Scene, name: str = "deployer") -> str:
    scene.admin.ok(
        kube.Request(
            "POST", f"/api/v1/namespaces/{scene.namespace}/serviceaccounts", {"metadata": {"name": name}}
        )
    )
    bound = kube.bind_cluster_role(scene.admin, scene.namespace, name, "cluster-admin")
    version = bound.body.get("metadata", {}).get("resourceVersion")
    if version:  # (an existing binding: 409, long seen)
        scene.rbac_seen("ClusterRoleBinding", version)
    return name


def _csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "e2e"),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode()


# --- namespace-delete -----------------------------------------------------------------------


def delete_namespace(scene: Scene) -> kube.Request:
    return kube.Request("DELETE", f"/api/v1/namespaces/{scene.namespace}")


def delete_namespace_foreground(scene: Scene) -> kube.Request:
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0,
    }
    return kube.Request("DELETE", f"/api/v1/namespaces/{scene.namespace}", options)


def strip_namespace_finalizers(scene: Scene) -> kube.Request:
    """PUT namespaces/finalize with no finalizers: on a terminating namespace, the content is orphaned."""
    current = scene.admin.ok(kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}")).body
    current["spec"] = {"finalizers": []}
    return kube.Request("PUT", f"/api/v1/namespaces/{scene.namespace}/finalize", current)


def _owner() -> list[dict[str, str]]:
    """An owner that does not exist: the garbage collector deletes the dependent namespace."""
    return [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": str(uuid.uuid4())}]


def namespace_owner_merge_patch(scene: Scene) -> kube.Request:
    patch = {"metadata": {"ownerReferences": _owner()}}
    return kube.Request(
        "PATCH", f"/api/v1/namespaces/{scene.namespace}", patch, content_type="application/merge-patch+json"
    )


def namespace_owner_server_side_apply(scene: Scene) -> kube.Request:
    applied = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": scene.namespace, "ownerReferences": _owner()},
    }
    return kube.Request(
        "PATCH",
        f"/api/v1/namespaces/{scene.namespace}",
        applied,
        content_type="application/apply-patch+yaml",
        query=(("fieldManager", "e2e-agent"), ("force", "true")),
    )


# --- secret-access --------------------------------------------------------------------------


def token_request(scene: Scene) -> kube.Request:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    return kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/serviceaccounts/default/token", body)


def pod_mounting_secret(scene: Scene) -> kube.Request:
    volume = {"name": "creds", "secret": {"secretName": "db-credentials"}}
    mounted = container(volumeMounts=[{"name": "creds", "mountPath": "/creds"}])
    return kube.Request("POST", _pods(scene), pod("reader", volumes=[volume], containers=[mounted]))


def pod_env_from_secret(scene: Scene) -> kube.Request:
    leaky = container(envFrom=[{"secretRef": {"name": "db-credentials"}}])
    return kube.Request("POST", _pods(scene), pod("env-reader", containers=[leaky]))


def exec_into_pod(scene: Scene) -> kube.Request:
    path = _existing_pod(scene)
    # CONNECT admission runs before the apiserver looks for the pod's node (it has none: HTTP 400).
    return kube.Request("POST", f"{path}/exec", query=(("command", "env"), ("stdout", "true")))


def bootstrap_token_secret(scene: Scene) -> kube.Request:
    token_id = scene.suffix  # 6 hex characters, as bootstrap token ids are
    secret = {
        "metadata": {"name": f"bootstrap-token-{token_id}"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": token_id, "token-secret": "0123456789abcdef"},
    }
    return kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/secrets", secret)


def pod_secrets_store_csi(scene: Scene) -> kube.Request:
    volume = {
        "name": "vault",
        "csi": {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": "db"},
        },
    }
    mounted = container(volumeMounts=[{"name": "vault", "mountPath": "/mnt/secrets"}])
    return kube.Request("POST", _pods(scene), pod("store-reader", volumes=[volume], containers=[mounted]))


def options_on_pod_proxy(scene: Scene) -> kube.Request:
    """OPTIONS on a proxy path reaches the authorizer without a verb (the guard used to answer 400)."""
    path = _existing_pod(scene)
    return kube.Request("OPTIONS", f"{path}/proxy/")


# --- privileged-workload --------------------------------------------------------------------


def privileged_pod(scene: Scene) -> kube.Request:
    root = container(
        securityContext={"privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False}
    )
    return kube.Request("POST", _pods(scene), pod("root", containers=[root]))


def privileged_deployment(scene: Scene) -> kube.Request:
    root = container(
        securityContext={"privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False}
    )
    path = f"/apis/apps/v1/namespaces/{scene.namespace}/deployments"
    return kube.Request("POST", path, deployment("root", containers=[root]))


def cronjob_host_path(scene: Scene) -> kube.Request:
    volume = {"name": "host", "hostPath": {"path": "/", "type": "Directory"}}
    mounted = container(volumeMounts=[{"name": "host", "mountPath": "/host"}])
    template = {"spec": pod_spec(restartPolicy="Never", volumes=[volume], containers=[mounted])}
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "host-reader"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}},
    }
    return kube.Request("POST", f"/apis/batch/v1/namespaces/{scene.namespace}/cronjobs", cronjob)


def ephemeral_container(scene: Scene) -> kube.Request:
    path = _existing_pod(scene)
    debug = {
        "name": "debug",
        "image": IMAGE,
        "targetContainerName": "app",
        "securityContext": {"privileged": True},
    }
    patch = {"spec": {"ephemeralContainers": [debug]}}
    return kube.Request(
        "PATCH", f"{path}/ephemeralcontainers", patch, content_type="application/strategic-merge-patch+json"
    )


def host_path_persistent_volume(scene: Scene) -> kube.Request:
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"e2e-node-root-{scene.suffix}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/"},
            "claimRef": {"namespace": scene.namespace, "name": "data"},
        },
    }
    return kube.Request("POST", "/api/v1/persistentvolumes", volume)


def git_repo_volume(scene: Scene) -> kube.Request:
    volume = {"name": "src", "gitRepo": {"repository": "https://git.example/site.git"}}
    mounted = container(volumeMounts=[{"name": "src", "mountPath": "/src"}])
    return kube.Request("POST", _pods(scene), pod("git", volumes=[volume], containers=[mounted]))


def service_external_ips(scene: Scene) -> kube.Request:
    service = {
        "metadata": {"name": "capture"},
        "spec": {
            "selector": {"app": "capture"},
            "ports": [{"port": 53, "protocol": "UDP"}],
            "externalIPs": ["192.0.2.53"],
        },
    }
    return kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/services", service)


def privileged_controller_revision(scene: Scene) -> kube.Request:
    root = container(
        securityContext={"privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False}
    )
    template = {
        "$patch": "replace",
        "metadata": {"labels": {"app": "db"}},
        "spec": pod_spec(containers=[root]),
    }
    revision = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {"name": "db-1"},
        "revision": 1,
        "data": {"spec": {"template": template}},
    }
    return kube.Request("POST", f"/apis/apps/v1/namespaces/{scene.namespace}/controllerrevisions", revision)


ROLLOUTS_CRD = "rollouts.argoproj.io"


def ensure_rollout_crd(admin: kube.Client) -> None:
    """Argo Rollouts' kind, schema-less (the guard reads the pod template, not the controller)."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": ROLLOUTS_CRD},
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    created = admin.request(kube.Request("POST", path, crd))
    assert created.status in (201, 409), created
    for _ in range(100):
        if admin.request(kube.Request("GET", "/apis/argoproj.io/v1alpha1/rollouts")).status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{ROLLOUTS_CRD} was not served within 10s")


def privileged_rollout(scene: Scene) -> kube.Request:
    ensure_rollout_crd(scene.admin)
    root = container(
        securityContext={"privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False}
    )
    rollout = deployment("canary", containers=[root])
    rollout.update(apiVersion="argoproj.io/v1alpha1", kind="Rollout")
    rollout["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 20}]}}
    return kube.Request("POST", f"/apis/argoproj.io/v1alpha1/namespaces/{scene.namespace}/rollouts", rollout)


# --- workload-identity ----------------------------------------------------------------------


def pod_as_powerful_service_account(scene: Scene) -> kube.Request:
    name = _powerful_service_account(scene)
    body = pod("borrowed", serviceAccountName=name, automountServiceAccountToken=True)
    return kube.Request("POST", _pods(scene), body)


def deployment_as_powerful_service_account(scene: Scene) -> kube.Request:
    name = _powerful_service_account(scene)
    body = deployment("borrowed", serviceAccountName=name, automountServiceAccountToken=True)
    return kube.Request("POST", f"/apis/apps/v1/namespaces/{scene.namespace}/deployments", body)


# --- rbac-escalation ------------------------------------------------------------------------

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def bind_cluster_admin(scene: Scene) -> kube.Request:
    binding = {
        "metadata": {"name": f"e2e-escalate-{scene.suffix}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": scene.namespace}],
    }
    return kube.Request("POST", f"{RBAC}/clusterrolebindings", binding)


def wildcard_cluster_role(scene: Scene) -> kube.Request:
    role = {
        "metadata": {"name": f"e2e-everything-{scene.suffix}"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }
    return kube.Request("POST", f"{RBAC}/clusterroles", role)


def certificate_signing_request(scene: Scene) -> kube.Request:
    csr = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": f"e2e-client-{scene.suffix}"},
        "spec": {
            "request": _csr_pem(f"e2e-{scene.suffix}"),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["client auth"],
        },
    }
    return kube.Request("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", csr)


def debug_role(scene: Scene) -> kube.Request:
    role = {
        "metadata": {"name": "debugger"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["update", "patch"]}
        ],
    }
    return kube.Request("POST", f"{RBAC}/namespaces/{scene.namespace}/roles", role)


# --- guard-tamper ---------------------------------------------------------------------------


def configmap_in_guard_namespace(scene: Scene) -> kube.Request:
    body = {"metadata": {"name": f"e2e-{scene.suffix}"}, "data": {"policy.yaml": "mode: off"}}
    return kube.Request("POST", f"/api/v1/namespaces/{scene.guard_namespace}/configmaps", body)


def delete_guard_deployment(scene: Scene) -> kube.Request:
    name = f"agent-guard-{scene.suffix}"
    collection = f"/apis/apps/v1/namespaces/{scene.guard_namespace}/deployments"
    scene.admin.ok(kube.Request("POST", collection, deployment(name)))
    return kube.Request("DELETE", f"{collection}/{name}")


def relax_pod_security_label(scene: Scene) -> kube.Request:
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    return kube.Request(
        "PATCH", f"/api/v1/namespaces/{scene.namespace}", patch, content_type="application/merge-patch+json"
    )


APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


def delete_api_service(scene: Scene) -> kube.Request:
    """A local APIService made by the admin (no backend: it changes no routing), deleted by the agent.

    Deleting a real one switches its API group off; repointing one (``v1.admissionregistration.k8s.io``)
    hands the apiserver's webhook informers to the agent's backend. Admission sees APIService writes
    (only admissionregistration.k8s.io objects are exempt), so the dry-run replay proves that too.
    """
    group = f"e2e-{scene.suffix}.example.com"
    service = {
        "metadata": {"name": f"v1.{group}"},
        "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 100, "versionPriority": 10},
    }
    scene.admin.ok(kube.Request("POST", APISERVICES, service))
    return kube.Request("DELETE", f"{APISERVICES}/v1.{group}")


def crd_with_conversion_webhook(scene: Scene) -> kube.Request:
    group = f"e2e-{scene.suffix}.example.com"
    crd = {
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": "https://collector.example/convert"},
                },
            },
        },
    }
    return kube.Request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)


ATTACKS = (
    Attack("delete-namespace", "namespace-delete", delete_namespace, stage=AUTHORIZATION),
    Attack(
        "delete-namespace-foreground", "namespace-delete", delete_namespace_foreground, stage=AUTHORIZATION
    ),
    Attack("namespace-finalize", "namespace-delete", strip_namespace_finalizers, stage=AUTHORIZATION),
    Attack("namespace-owner-merge-patch", "namespace-delete", namespace_owner_merge_patch),
    Attack("namespace-owner-apply", "namespace-delete", namespace_owner_server_side_apply),
    Attack("token-request", "secret-access", token_request, stage=AUTHORIZATION),
    Attack("pod-mounts-secret", "secret-access", pod_mounting_secret),
    Attack("pod-env-from-secret", "secret-access", pod_env_from_secret),
    Attack(
        "exec-connect", "secret-access", exec_into_pod, dry_run=False, admitted=(400,), stage=AUTHORIZATION
    ),
    Attack("bootstrap-token-secret", "secret-access", bootstrap_token_secret, body_audited=False),
    Attack("pod-secrets-store-csi", "secret-access", pod_secrets_store_csi),
    Attack(
        "options-pod-proxy",
        "secret-access",
        options_on_pod_proxy,
        dry_run=False,
        admitted=(400, 502, 503),  # no pod IP to proxy to ("address not allowed"), or nothing listening
        stage=AUTHORIZATION,
    ),
    Attack("privileged-pod", "privileged-workload", privileged_pod),
    Attack("hostpath-persistentvolume", "privileged-workload", host_path_persistent_volume),
    Attack("gitrepo-volume", "privileged-workload", git_repo_volume),
    Attack("service-external-ips", "privileged-workload", service_external_ips),
    Attack("privileged-controllerrevision", "privileged-workload", privileged_controller_revision),
    Attack("privileged-argo-rollout", "privileged-workload", privileged_rollout),
    Attack("privileged-deployment", "privileged-workload", privileged_deployment),
    Attack("cronjob-hostpath", "privileged-workload", cronjob_host_path),
    Attack("ephemeral-container", "privileged-workload", ephemeral_container),
    Attack("pod-as-cluster-admin-sa", "workload-identity", pod_as_powerful_service_account),
    Attack("deployment-as-cluster-admin-sa", "workload-identity", deployment_as_powerful_service_account),
    Attack("bind-cluster-admin", "rbac-escalation", bind_cluster_admin),
    Attack("wildcard-clusterrole", "rbac-escalation", wildcard_cluster_role),
    Attack("csr-create", "rbac-escalation", certificate_signing_request),
    Attack("role-ephemeral-containers", "rbac-escalation", debug_role),
    Attack("configmap-in-guard-namespace", "guard-tamper", configmap_in_guard_namespace, stage=AUTHORIZATION),
    Attack("delete-guard-deployment", "guard-tamper", delete_guard_deployment, stage=AUTHORIZATION),
    Attack("relax-pod-security-label", "guard-tamper", relax_pod_security_label),
    Attack("delete-apiservice", "guard-tamper", delete_api_service, stage=AUTHORIZATION),
    Attack("crd-conversion-webhook", "guard-tamper", crd_with_conversion_webhook),
)
