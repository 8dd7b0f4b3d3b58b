"""Kind <-> resource for built-in Kubernetes types, for tools that work without a cluster.

A manifest names ``apiVersion`` + ``kind``; an AdmissionRequest (and an audit event's ``objectRef``)
names group/version/*resource*. The apiserver maps one to the other with its discovery data;
``agent-guard check`` and ``replay`` have no apiserver, so they use this table of the built-in types
an agent is likely to write. Anything else (CRDs) gets the usual lowercase plural with a note saying
it was guessed, because a wrong resource name would silently skip the guards that match on it.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACES = "namespaces"


@dataclass(frozen=True, slots=True)
class Kind:
    group: str
    kind: str
    resource: str
    namespaced: bool


def _k(group: str, namespaced: bool, *pairs: tuple[str, str]) -> list[Kind]:
    return [Kind(group, kind, resource, namespaced) for kind, resource in pairs]


_TABLE: list[Kind] = [
    *_k(
        "",
        True,
        ("Pod", "pods"),
        ("Service", "services"),
        ("ConfigMap", "configmaps"),
        ("Secret", "secrets"),
        ("ServiceAccount", "serviceaccounts"),
        ("PersistentVolumeClaim", "persistentvolumeclaims"),
        ("ReplicationController", "replicationcontrollers"),
        ("PodTemplate", "podtemplates"),
        ("Endpoints", "endpoints"),
        ("Event", "events"),
        ("LimitRange", "limitranges"),
        ("ResourceQuota", "resourcequotas"),
        ("Binding", "bindings"),
    ),
    *_k(
        "",
        False,
        ("Namespace", "namespaces"),
        ("Node", "nodes"),
        ("PersistentVolume", "persistentvolumes"),
        ("ComponentStatus", "componentstatuses"),
    ),
    *_k(
        "apps",
        True,
        ("Deployment", "deployments"),
        ("ReplicaSet", "replicasets"),
        ("StatefulSet", "statefulsets"),
        ("DaemonSet", "daemonsets"),
        ("ControllerRevision", "controllerrevisions"),
    ),
    *_k("batch", True, ("Job", "jobs"), ("CronJob", "cronjobs")),
    *_k("rbac.authorization.k8s.io", True, ("Role", "roles"), ("RoleBinding", "rolebindings")),
    *_k(
        "rbac.authorization.k8s.io",
        False,
        ("ClusterRole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
    ),
    *_k("certificates.k8s.io", False, ("CertificateSigningRequest", "certificatesigningrequests")),
    *_k(
        "admissionregistration.k8s.io",
        False,
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
        ("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings"),
    ),
    *_k("networking.k8s.io", True, ("Ingress", "ingresses"), ("NetworkPolicy", "networkpolicies")),
    *_k("networking.k8s.io", False, ("IngressClass", "ingressclasses")),
    *_k("policy", True, ("PodDisruptionBudget", "poddisruptionbudgets")),
    *_k("autoscaling", True, ("HorizontalPodAutoscaler", "horizontalpodautoscalers")),
    *_k("coordination.k8s.io", True, ("Lease", "leases")),
    *_k("discovery.k8s.io", True, ("EndpointSlice", "endpointslices")),
    *_k(
        "storage.k8s.io",
        False,
        ("StorageClass", "storageclasses"),
        ("CSIDriver", "csidrivers"),
        ("CSINode", "csinodes"),
        ("VolumeAttachment", "volumeattachments"),
    ),
    *_k("scheduling.k8s.io", False, ("PriorityClass", "priorityclasses")),
    *_k("node.k8s.io", False, ("RuntimeClass", "runtimeclasses")),
    *_k("apiextensions.k8s.io", False, ("CustomResourceDefinition", "customresourcedefinitions")),
    *_k("apiregistration.k8s.io", False, ("APIService", "apiservices")),
    *_k("authentication.k8s.io", False, ("TokenReview", "tokenreviews")),
    *_k(
        "authorization.k8s.io",
        False,
        ("SubjectAccessReview", "subjectaccessreviews"),
        ("SelfSubjectAccessReview", "selfsubjectaccessreviews"),
        ("SelfSubjectRulesReview", "selfsubjectrulesreviews"),
    ),
    *_k("authorization.k8s.io", True, ("LocalSubjectAccessReview", "localsubjectaccessreviews")),
    # Well-known custom kinds that carry pod specs (``webhook.podspec.TEMPLATE_PATHS``).
    *_k(
        "argoproj.io",
        True,
        ("Rollout", "rollouts"),
        ("Workflow", "workflows"),
        ("WorkflowTemplate", "workflowtemplates"),
        ("CronWorkflow", "cronworkflows"),
    ),
    *_k("argoproj.io", False, ("ClusterWorkflowTemplate", "clusterworkflowtemplates")),
    *_k(
        "serving.knative.dev",
        True,
        ("Service", "services"),
        ("Configuration", "configurations"),
        ("Revision", "revisions"),
    ),
    *_k(
        "tekton.dev",
        True,
        ("Task", "tasks"),
        ("TaskRun", "taskruns"),
        ("Pipeline", "pipelines"),
        ("PipelineRun", "pipelineruns"),
    ),
    *_k("jobset.x-k8s.io", True, ("JobSet", "jobsets")),
]

_BY_KIND = {(k.group, k.kind): k for k in _TABLE}
_BY_RESOURCE = {(k.group, k.resource): k for k in _TABLE}

# Subresources whose request body is not the parent kind (the ``kind`` of such an AdmissionRequest).
SUBRESOURCE_KINDS = {
    ("", "pods", "exec"): "PodExecOptions",
    ("", "pods", "attach"): "PodAttachOptions",
    ("", "pods", "portforward"): "PodPortForwardOptions",
    ("", "pods", "proxy"): "PodProxyOptions",
    ("", "nodes", "proxy"): "NodeProxyOptions",
    ("", "services", "proxy"): "ServiceProxyOptions",
    ("", "pods", "eviction"): "Eviction",
    ("", "pods", "binding"): "Binding",
    ("", "serviceaccounts", "token"): "TokenRequest",
}
# The subresources the apiserver sends to admission as CONNECT (their body is connect options).
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> ``("apps", "v1")``; ``v1`` -> ``("", "v1")``."""
    group, slash, version = api_version.rpartition("/")
    return (group, version) if slash else ("", api_version)


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    return lower + "s"


@dataclass(frozen=True, slots=True)
class Resolved:
    group: str
    version: str
    resource: str
    namespaced: bool | None  # None: unknown kind, scope unknown
    note: str = ""


def resolve(api_version: str, kind: str) -> Resolved:
    """The resource a manifest's ``apiVersion``/``kind`` is served as (guessed, with a note, if unknown)."""
    group, version = split_api_version(api_version)
    known = _BY_KIND.get((group, kind))
    if known is not None:
        return Resolved(group, version, known.resource, known.namespaced)
    guess = _plural(kind)
    return Resolved(
        group,
        version,
        guess,
        None,
        note=f"{kind} ({api_version}) is not a built-in kind; assumed resource {guess!r}",
    )


def kind_of(group: str, resource: str, sub_resource: str = "") -> str:
    """The kind of the body sent for ``group/resource[/sub]``, or "" when not a built-in."""
    if sub_resource:
        special = SUBRESOURCE_KINDS.get((group, resource, sub_resource))
        if special is not None:
            return special
    known = _BY_RESOURCE.get((group, resource))
    return known.kind if known is not None else ""
