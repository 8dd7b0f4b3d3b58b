"""``rbac-escalation``: an agent may not grant power, to itself or to anyone else.

An agent bound to ``cluster-admin`` passes RBAC's own escalation checks (it already holds every
permission), so nothing stops it from writing a ClusterRole that reads every Secret, binding
``cluster-admin`` to ``system:authenticated``, or minting a client certificate for ``system:masters``.
This family judges the *content* of what the agent writes:

- Roles/ClusterRoles: wildcards, the escalate/bind/impersonate verbs, and any verb on the resources
  that are credentials or control of the cluster's security machinery; aggregation (a ClusterRole
  that collects rules, or rules that flow into ``admin``/``edit``/``view``);
- RoleBindings/ClusterRoleBindings: powerful roles, broad groups and the agent's own identities;
- CertificateSigningRequests and their approval (a client certificate is a login as any user).

Checks follow RBAC's matching rules (``k8s.io/component-helpers/auth/rbac``), but err on the side of
denying: names are compared case-insensitively, ``resourceNames`` never make a dangerous rule safe,
and any ``*`` inside a resource or URL counts as a wildcard even where RBAC would read it literally.
The authorization side denies the verbs that no admission request ever shows (impersonate and the
constrained ``impersonate:*`` verbs, and the escalate/bind checks RBAC performs) plus approving CSRs
(the approval write and ``approve`` on ``signers``). A denied escalate/bind check while an agent
writes a Role or binding does not stop the write: RBAC then checks that the agent already holds every
permission it grants, and admission judges the object (the decision log says so).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pydantic

from webhook import attributes, effective, rbac, safe
from webhook.guards import base

RBAC_GROUP = "rbac.authorization.k8s.io"
CERTIFICATES_GROUP = "certificates.k8s.io"

ESCALATING_VERBS = ("escalate", "bind", "impersonate")
# Constrained impersonation (KEP-5284): ``impersonate:user-info``, ``impersonate:serviceaccount``,
# ``impersonate-on:<mode>:<verb>``, … each is impersonation, only narrower.
IMPERSONATE_PREFIXES = ("impersonate:", "impersonate-on:")

# Any verb on these is a credential, a shell, or control over the cluster's security machinery.
SENSITIVE_RESOURCES = (
    "secrets",
    "serviceaccounts/token",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "pods/ephemeralcontainers",  # kubectl debug: a new container in a running pod, exec-equivalent
    "services/proxy",
    "nodes/proxy",
    "certificatesigningrequests/approval",
    "signers",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "mutatingadmissionpolicies",
    "mutatingadmissionpolicybindings",
)

# ClusterRoles that grant secrets, exec or RBAC power by design.
POWERFUL_CLUSTER_ROLES = ("cluster-admin", "admin", "edit")
# ``system:`` ClusterRoles belong to Kubernetes components (controllers, nodes, the scheduler) and
# several are as strong as cluster-admin; ``system:aggregate-to-edit`` is ``edit`` under another name.
# These three are bound to every authenticated user by default, so binding them grants nothing new.
HARMLESS_SYSTEM_ROLES = ("system:basic-user", "system:discovery", "system:public-info-viewer")

# Groups whose names start with ``system:`` are assigned by Kubernetes itself: system:masters (bypasses
# authorization), system:authenticated / system:unauthenticated (everyone), system:serviceaccounts[:ns]
# (every ServiceAccount, including ones the agent creates), system:nodes, system:bootstrappers.
RESERVED_GROUP_PREFIX = "system:"
ANONYMOUS_USER = "system:anonymous"

AGGREGATE_LABEL_PREFIX = "rbac.authorization.k8s.io/aggregate-to-"

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

ASK = "ask a human operator if this is really needed"


class Settings(base.GuardSettings):
    """``powerfulRoles``: more roles agents may not bind, on top of cluster-admin, admin, edit, system:*.

    An entry ``name`` is a ClusterRole; ``namespace/name`` is a Role in that namespace; a trailing
    ``*`` makes either a prefix pattern (``platform-*``).
    """

    powerful_roles: tuple[str, ...] = ()

    @pydantic.field_validator("powerful_roles")
    @classmethod
    def _well_formed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            namespace, slash, name = item.rpartition("/")
            if not name or (slash and not namespace) or "/" in namespace:
                raise ValueError(f"{item!r} must be 'clusterrole-name' or 'namespace/role-name'")
            if "*" in item[:-1]:
                raise ValueError(f"{item!r}: '*' is only allowed at the end (a prefix pattern)")
        return value


# --- small helpers -------------------------------------------------------------------------------


_strings = safe.strings  # a wrong type raises safe.Malformed (a finding), never reads as empty


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _matches(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _describe(request: attributes.AdmissionRequest) -> str:
    kind = request.kind or request.resource.resource
    where = f' in namespace "{request.namespace}"' if request.namespace else ""
    return f'{kind} "{request.name}"{where}'


# --- Roles and ClusterRoles ------------------------------------------------------------------------


def _rule_problems(rule: Mapping[str, Any]) -> list[str]:
    """Why one PolicyRule is too strong for an agent to write, in plain words (empty: harmless)."""
    verbs = [v.lower() for v in _strings(rule.get("verbs"))]
    groups = _strings(rule.get("apiGroups"))
    resources = [r.lower() for r in _strings(rule.get("resources"))]
    urls = _strings(rule.get("nonResourceURLs"))
    problems = []
    if "*" in verbs:
        problems.append('verbs "*" (every verb, including escalate, bind and impersonate)')
    escalating = [v for v in ESCALATING_VERBS if v in verbs]
    escalating += [v for v in verbs if v.startswith(IMPERSONATE_PREFIXES)]
    if escalating:
        problems.append(f"verbs {_quoted(escalating)}")
    if "*" in groups:
        problems.append('apiGroups "*" (every API group, present and future)')
    wildcards = [r for r in resources if "*" in r]
    if wildcards:
        problems.append(f"wildcard resources {_quoted(wildcards)}")
    sensitive = [r for r in resources if r in SENSITIVE_RESOURCES]
    if sensitive:
        problems.append(f"access to {_quoted(sensitive)}")
    wild_urls = [u for u in urls if "*" in u]
    if wild_urls:
        problems.append(f"wildcard nonResourceURLs {_quoted(wild_urls)}")
    return problems


def _aggregation_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    safe.mapping(obj.get("aggregationRule"), "aggregationRule")  # a wrong type is malformed
    if obj.get("aggregationRule") is not None:
        yield (
            "sets aggregationRule: an aggregated ClusterRole collects the rules of every ClusterRole its "
            "selector matches, now and later (including cluster-admin-level ones); list the rules explicitly"
        )
    labels = safe.string_map(safe.mapping(obj.get("metadata"), "metadata").get("labels"), "metadata.labels")
    for key, value in labels.items():
        # Selectors of aggregating roles may match any value; only an explicit "false" is harmless.
        if str(key).startswith(AGGREGATE_LABEL_PREFIX) and str(value).lower() != "false":
            target = str(key)[len(AGGREGATE_LABEL_PREFIX) :]
            yield (
                f'sets label metadata.labels["{key}"]="{value}": its rules would be added to the '
                f'"{target}" role that other users and ServiceAccounts already hold; remove the label'
            )


def _role_findings(request: attributes.AdmissionRequest) -> Iterator[str]:
    obj = request.object
    if obj is None:
        return
    what = _describe(request)
    for index, rule in safe.mappings(obj.get("rules"), "rules"):
        problems = _rule_problems(rule)
        if problems:
            yield (
                f"{what}: rules[{index}] grants {'; '.join(problems)}. Agents may only write roles with "
                "explicit verbs on ordinary resources (resourceNames do not make these safe); "
                f"narrow the rule or {ASK}"
            )
    if request.resource.resource == "clusterroles":
        for problem in _aggregation_problems(obj):
            yield f"{what} {problem}"


# --- RoleBindings and ClusterRoleBindings ----------------------------------------------------------


def _powerful_role(ref: Mapping[str, Any], namespace: str, settings: Settings) -> bool:
    kind, name = safe.text(ref.get("kind"), "roleRef.kind"), safe.text(ref.get("name"), "roleRef.name")
    if kind == "ClusterRole":
        if name in POWERFUL_CLUSTER_ROLES:
            return True
        if name.startswith(RESERVED_GROUP_PREFIX) and name not in HARMLESS_SYSTEM_ROLES:
            return True
        return any("/" not in p and _matches(p, name) for p in settings.powerful_roles)
    if kind == "Role":
        qualified = f"{namespace}/{name}"
        return any("/" in p and _matches(p, qualified) for p in settings.powerful_roles)
    return False


def _subject_identity(subject: Mapping[str, Any], binding_namespace: str) -> attributes.UserInfo | None:
    """The caller a subject grants to, as the authenticator would present it (None: malformed)."""
    kind, name = safe.text(subject.get("kind")), safe.text(subject.get("name"))
    if not name:
        return None
    if kind == "Group":
        return attributes.UserInfo(username="", groups=(name,))
    if kind == "ServiceAccount":
        # RBAC defaults a ServiceAccount subject's namespace to the binding's own namespace.
        namespace = safe.text(subject.get("namespace")) or binding_namespace
        if not namespace:
            return None
        name = f"{attributes.SA_PREFIX}{namespace}:{name}"
    elif kind != "User":
        return None
    return attributes.authenticated_user(name)


def _subject_problem(
    subject: Mapping[str, Any], binding_namespace: str, caller: attributes.UserInfo, ctx: base.Context
) -> str | None:
    kind, name = safe.text(subject.get("kind")), safe.text(subject.get("name"))
    if kind == "Group" and name.startswith(RESERVED_GROUP_PREFIX):
        return (
            f'group "{name}" is a Kubernetes-assigned group (all users, all ServiceAccounts, or '
            "system:masters); bind a specific ServiceAccount instead"
        )
    if kind == "User" and name == ANONYMOUS_USER:
        return f'user "{name}" is every unauthenticated request; bind a specific ServiceAccount instead'
    identity = _subject_identity(subject, binding_namespace)
    if identity is None:
        return None
    own = bool(identity.username) and identity.username == caller.username
    own = own or (kind == "Group" and name in caller.groups)
    if own or ctx.is_agent(identity):
        return (
            f'{kind} "{identity.username or name}" is an agent identity (possibly your own); agents may '
            "not grant permissions to agents, ask a human operator to change an agent's access"
        )
    return None


def _binding_findings(
    request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context
) -> Iterator[str]:
    obj = request.object
    if obj is None:
        return
    what = _describe(request)
    metadata = safe.mapping(obj.get("metadata"), "metadata")
    namespace = request.namespace or safe.text(metadata.get("namespace"), "metadata.namespace")
    ref = safe.mapping(obj.get("roleRef"), "roleRef")
    if ref and _powerful_role(ref, namespace, settings):
        yield (
            f'{what}: roleRef {ref.get("kind")} "{ref.get("name")}" is a powerful role (Secrets, exec, RBAC '
            "or control-plane access); bind a Role with only the verbs and resources needed, or "
            f"{ASK}"
        )
    for index, subject in safe.mappings(obj.get("subjects"), "subjects"):
        problem = _subject_problem(subject, namespace, request.user, ctx)
        if problem:
            yield f"{what}: subjects[{index}] {problem}"


# --- effective permissions (with an RBAC view) -----------------------------------------------------


def _binding_namespace(request: attributes.AdmissionRequest, obj: Mapping[str, Any]) -> str:
    metadata = safe.mapping(obj.get("metadata"), "metadata")
    return request.namespace or safe.text(metadata.get("namespace"), "metadata.namespace")


def _subject_keys(obj: Mapping[str, Any] | None, namespace: str) -> set[tuple[str, str, str]]:
    subjects = obj.get("subjects") if obj is not None else None
    keys = set()
    for index, subject in safe.mappings(subjects, "subjects"):
        kind = safe.text(subject.get("kind"), f"subjects[{index}].kind")
        subject_namespace = safe.text(subject.get("namespace"), f"subjects[{index}].namespace") or (
            namespace if kind == "ServiceAccount" else ""
        )
        keys.add((kind, subject_namespace, safe.text(subject.get("name"), f"subjects[{index}].name")))
    return keys


def _listed(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _effective_binding_findings(request: attributes.AdmissionRequest, ctx: base.Context) -> Iterator[str]:
    """A binding is judged by the effective rules of the role it references (custom and aggregated
    roles included): handing any power of ``webhook.powers`` to anyone is refused. An UPDATE that
    adds no subject hands nothing to anyone new and is left to the name-based checks."""
    obj = request.object
    if ctx.rbac is None or obj is None:
        return
    what = _describe(request)
    namespace = _binding_namespace(request, obj)
    ref = safe.mapping(obj.get("roleRef"), "roleRef")
    kind = safe.text(ref.get("kind"), "roleRef.kind")
    name = safe.text(ref.get("name"), "roleRef.name")
    if kind not in (rbac.ROLE, rbac.CLUSTER_ROLE) or not name:
        return  # the apiserver rejects such a binding itself
    subjects = _subject_keys(obj, namespace)
    if request.operation == "UPDATE" and subjects <= _subject_keys(request.old_object, namespace):
        return
    role = f'{kind} "{namespace}/{name}"' if kind == rbac.ROLE else f'{kind} "{name}"'
    try:
        snapshot = effective.snapshot(ctx)
    except effective.NotSynced:
        yield f"{what}: {effective.not_synced(f'what roleRef {role} grants')}"
        return
    if snapshot is None:
        return
    rules = snapshot.rules_of(kind, name, namespace if kind == rbac.ROLE else "")
    if rules is None:
        yield (
            f"{what}: roleRef {role} is not in the guard's RBAC view yet, so what it grants cannot be "
            f"judged; if you just created it, {effective.RETRY}"
        )
        return
    if request.resource.resource == "rolebindings":
        rules = tuple(rule for rule in rules if rule.resources or rule.api_groups)
    found = effective.rule_powers(rules)
    if found:
        who = _listed([f"{k} {f'{ns}/' if ns else ''}{n}" for k, ns, n in sorted(subjects)]) or "nobody yet"
        yield (
            f"{what}: roleRef {role} grants powers the guard denies to agents, and the binding would hand "
            f"them to {who}, whose requests the guard does not judge: {effective.describe_powers(found)}; "
            f"bind a role with only the verbs and resources needed, without these, or {ASK}"
        )


def _role_in_request(request: attributes.AdmissionRequest) -> rbac.Role | None:
    obj = request.object
    if obj is None:
        return None
    kind = rbac.CLUSTER_ROLE if request.resource.resource == "clusterroles" else rbac.ROLE
    metadata = dict(safe.mapping(obj.get("metadata"), "metadata"))
    safe.text(metadata.get("name"), "metadata.name")  # wrong types are malformed, not "no role"
    safe.text(metadata.get("namespace"), "metadata.namespace")
    metadata.setdefault("name", request.name)
    if kind == rbac.ROLE and not metadata.get("namespace"):
        metadata["namespace"] = request.namespace
    try:
        return rbac.role_from_dict({**obj, "metadata": metadata}, kind)
    except rbac.RbacObjectError:
        return None  # the apiserver rejects a role without a name or namespace itself


def _effective_role_findings(request: attributes.AdmissionRequest, ctx: base.Context) -> Iterator[str]:
    """A Role/ClusterRole write that would give a power to someone already bound to it, directly or
    through a ClusterRole that aggregates it, is refused (binding a harmless role first and filling
    it afterwards is the same escalation as binding a powerful one)."""
    role = _role_in_request(request)
    if ctx.rbac is None or role is None:
        return
    if role.aggregation is None and not effective.rule_powers(role.rules):
        return  # it grants no power, so it can give none to anyone, whatever aggregates it
    what = _describe(request)
    try:
        snapshot = effective.snapshot(ctx)
    except effective.NotSynced:
        yield f"{what}: {effective.not_synced('who is bound to it')}"
        return
    if snapshot is None:
        return
    after = snapshot.with_role(role)
    for (kind, namespace, name), rules in snapshot.effective_changes(after):
        before = {
            power.id for power, _ in effective.rule_powers(snapshot.rules_of(kind, name, namespace) or ())
        }
        added = [(power, rule) for power, rule in effective.rule_powers(rules) if power.id not in before]
        holders = after.holders(kind, name, namespace)
        if not added or not holders:
            continue
        target = f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'
        via = (
            ""
            if (kind, namespace, name) == (role.kind, role.namespace, role.name)
            else " (it aggregates this one)"
        )
        who = _listed([f"{subject.describe()} through {binding.ref}" for binding, subject in holders])
        yield (
            f"{what} would give powers the guard denies to agents to those already bound to {target}{via}: "
            f"{who}. The powers: {effective.describe_powers(added)}; keep the role without these, or {ASK}"
        )


# --- CertificateSigningRequests -------------------------------------------------------------------


def _csr_findings(request: attributes.AdmissionRequest) -> Iterator[str]:
    if request.operation == "CREATE" and not request.sub_resource:
        signer = ""
        spec = safe.mapping(request.object.get("spec") if request.object is not None else None, "spec")
        signer = safe.text(spec.get("signerName"), "spec.signerName")
        yield (
            f'creating CertificateSigningRequest "{request.name}" (spec.signerName "{signer}") is not '
            "allowed for agents: a signed client certificate is a login as any user or group it names, "
            f"including system:masters; {ASK}"
        )
    elif request.operation == "UPDATE" and request.sub_resource == "approval":
        yield (
            f'approving or denying CertificateSigningRequest "{request.name}" (status.conditions via the '
            "approval subresource) is not allowed for agents: approval decides who may log in to the "
            f"cluster; {ASK}"
        )


# --- the checks ------------------------------------------------------------------------------------


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if request.operation not in ("CREATE", "UPDATE"):
        return
    group, resource = request.resource.group, request.resource.resource
    if group == RBAC_GROUP and not request.sub_resource:
        if resource in ("roles", "clusterroles"):
            yield from _role_findings(request)
            yield from _effective_role_findings(request, ctx)
        elif resource in ("rolebindings", "clusterrolebindings"):
            yield from _binding_findings(request, settings, ctx)
            yield from _effective_binding_findings(request, ctx)
    elif group == CERTIFICATES_GROUP and resource == "certificatesigningrequests":
        yield from _csr_findings(request)


def check_access(request: attributes.AccessRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if not request.is_resource_request:
        return
    verb = request.verb.lower()
    target = request.resource_path or "(any resource)"
    if verb in ESCALATING_VERBS or verb.startswith(IMPERSONATE_PREFIXES):
        yield (
            f'the verb "{verb}" on {target} is not allowed for agents: it grants permissions or identities '
            f"beyond the agent's own; {ASK}"
        )
    elif verb in WRITE_VERBS and request.resource_path == "certificatesigningrequests/approval":
        yield (
            f'{verb} on certificatesigningrequests/approval "{request.name}" is not allowed for agents: '
            f"approving a CSR issues a login certificate; {ASK}"
        )
    elif verb in ("approve", "*") and request.group == CERTIFICATES_GROUP and request.resource == "signers":
        yield (
            f'"{verb}" on certificates.k8s.io signers "{request.name}" is not allowed for agents: it is the '
            f"permission to approve CertificateSigningRequests for that signer (a login certificate); {ASK}"
        )


FAMILY = base.Family(
    id="rbac-escalation",
    summary=(
        "Denies agents roles with wildcards, escalating verbs or sensitive resources, aggregation, "
        "bindings to powerful roles, broad groups or agents, CSRs and CSR approval, "
        "and the impersonate/escalate/bind verbs."
    ),
    settings=Settings,
    admission=check,
    access=check_access,
    rules=(
        base.AdmissionRule(
            api_groups=(RBAC_GROUP,),
            resources=("roles", "clusterroles", "rolebindings", "clusterrolebindings"),
            operations=("CREATE", "UPDATE"),
        ),
        base.AdmissionRule(
            api_groups=(CERTIFICATES_GROUP,),
            resources=("certificatesigningrequests", "certificatesigningrequests/approval"),
            operations=("CREATE", "UPDATE"),
        ),
    ),
)
