"""Kubernetes RBAC semantics, evaluated offline: who is granted what, and through which binding.

The guard judged RBAC objects and workloads by *names* (``cluster-admin`` is powerful, ``default`` is
harmless); an agent walks around that with a custom role that grants the same. This module computes
what an identity is really granted, the way the apiserver's RBAC authorizer does
(``k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`` and ``k8s.io/component-helpers/auth/rbac``):

- a ClusterRoleBinding grants its role's rules in every namespace and for non-resource URLs; a
  RoleBinding grants its Role's (or ClusterRole's) resource rules in its own namespace only;
- subjects: ``User`` by name, ``Group`` by name (``system:authenticated``, ``system:serviceaccounts``,
  ``system:serviceaccounts:<ns>`` included: callers carry them), ``ServiceAccount`` by
  ``system:serviceaccount:<ns>:<name>`` (a RoleBinding's subject without a namespace means the
  binding's own);
- rules: verbs, apiGroups and resources with ``*``; ``*/sub`` matches that subresource of every
  resource; ``resourceNames`` restrict a rule to those names (a request without a name — list,
  create — never matches a rule that names names); ``nonResourceURLs`` with a trailing ``*`` prefix;
- aggregated ClusterRoles: the rules of every ClusterRole their ``aggregationRule`` selects, as the
  controller-manager's aggregation controller fills them in (computed here, transitively, because a
  bare apiserver or a file dump may not have them filled yet).

Everything is pure: a ``Snapshot`` is built from plain object dicts (what a watch or ``kubectl get -o
yaml`` yields) and never talks to a cluster. The guard feeds it from an informer (``webhook.rbaccache``)
and the ``agent-guard rbac`` tools from files or a live read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from webhook import attributes

T = TypeVar("T")
DERIVED_LIMIT = 4096  # answers memoized per snapshot (accounts judged), so memory stays bounded

GROUP = "rbac.authorization.k8s.io"
ALL = "*"
AUTHENTICATED = attributes.AUTHENTICATED
SERVICE_ACCOUNTS = attributes.SERVICE_ACCOUNTS

ROLE, CLUSTER_ROLE = "Role", "ClusterRole"
ROLE_BINDING, CLUSTER_ROLE_BINDING = "RoleBinding", "ClusterRoleBinding"
KINDS = (ROLE, CLUSTER_ROLE, ROLE_BINDING, CLUSTER_ROLE_BINDING)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def service_account_user(namespace: str, name: str) -> attributes.UserInfo:
    """The caller a ServiceAccount's token authenticates as (username and the groups it carries)."""
    return attributes.authenticated_user(f"{attributes.SA_PREFIX}{namespace}:{name}")


# --- what is asked ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's authorization attributes (what a SubjectAccessReview carries).

    ``namespace`` "" asks cluster-wide (or about a cluster-scoped resource); ``path`` set means a
    non-resource request (``/metrics``), where only ``verb`` counts besides it.
    """

    verb: str
    resource: str = ""
    group: str = ""
    sub_resource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return not self.path

    def describe(self) -> str:
        if not self.is_resource:
            return f"{self.verb} {self.path}"
        resource = f"{self.resource}/{self.sub_resource}" if self.sub_resource else self.resource
        group = f".{self.group}" if self.group else ""
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {resource}{group}{where}"


# --- rules, roles, bindings -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A PolicyRule as RBAC reads it."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=_strings(raw.get("verbs")),
            api_groups=_strings(raw.get("apiGroups")),
            resources=_strings(raw.get("resources")),
            resource_names=_strings(raw.get("resourceNames")),
            non_resource_urls=_strings(raw.get("nonResourceURLs")),
        )

    def to_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.api_groups or self.resources:
            out["apiGroups"] = list(self.api_groups)
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        out["verbs"] = list(self.verbs)
        return out

    def verb_matches(self, verb: str) -> bool:
        return ALL in self.verbs or verb in self.verbs

    def group_matches(self, group: str) -> bool:
        return ALL in self.api_groups or group in self.api_groups

    def resource_matches(self, resource: str, sub_resource: str) -> bool:
        combined = f"{resource}/{sub_resource}" if sub_resource else resource
        for candidate in self.resources:
            if candidate in (ALL, combined):
                return True
            if sub_resource and candidate == f"*/{sub_resource}":
                return True
        return False

    def name_matches(self, name: str) -> bool:
        return not self.resource_names or name in self.resource_names

    def url_matches(self, path: str) -> bool:
        for candidate in self.non_resource_urls:
            if candidate in (ALL, path):
                return True
            if candidate.endswith(ALL) and path.startswith(candidate[:-1]):
                return True
        return False

    def allows(self, ask: Ask) -> bool:
        """RBAC's ``RuleAllows``: does this one rule grant the request?"""
        if not self.verb_matches(ask.verb):
            return False
        if not ask.is_resource:
            return self.url_matches(ask.path)
        return (
            self.group_matches(ask.group)
            and self.resource_matches(ask.resource, ask.sub_resource)
            and self.name_matches(ask.name)
        )


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A metav1.LabelSelector (matchLabels + matchExpressions), as aggregation rules use it."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LabelSelector:
        labels = {str(k): str(v) for k, v in _mapping(raw.get("matchLabels")).items()}
        expressions = []
        for item in raw.get("matchExpressions") or ():
            if isinstance(item, Mapping):
                values = _strings(item.get("values"))
                expressions.append((str(item.get("key", "")), str(item.get("operator", "")), values))
        return cls(labels, tuple(expressions))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if not self.match_labels and not self.expressions:
            return False  # an empty aggregation selector selects nothing (the controller skips it)
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for key, operator, values in self.expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
            if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
                return False  # unknown operators never match: erring towards fewer grants is wrong,
                # but the apiserver rejects such a selector, so it cannot be in a real cluster
        return True


@dataclass(frozen=True, slots=True)
class Role:
    """A Role (``namespace`` set) or ClusterRole (``namespace`` "")."""

    kind: str
    name: str
    namespace: str = ""
    rules: tuple[Rule, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    aggregation: tuple[LabelSelector, ...] | None = None  # None: not an aggregated ClusterRole

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # User | Group | ServiceAccount
    name: str
    namespace: str = ""

    def describe(self) -> str:
        if self.kind == "ServiceAccount":
            return f"ServiceAccount {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    def matches(self, user: attributes.UserInfo) -> bool:
        if self.kind == "User":
            return user.username == self.name
        if self.kind == "Group":
            return self.name in user.groups
        if self.kind == "ServiceAccount":
            return user.username == f"{attributes.SA_PREFIX}{self.namespace}:{self.name}"
        return False


@dataclass(frozen=True, slots=True)
class Binding:
    """A RoleBinding (``namespace`` set) or ClusterRoleBinding."""

    kind: str
    name: str
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...] = ()
    namespace: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


class RbacObjectError(ValueError):
    """An object that is not a usable RBAC object; the message names the field."""


def _metadata(obj: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    metadata = _mapping(obj.get("metadata"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise RbacObjectError("metadata.name: missing")
    namespace = metadata.get("namespace") or ""
    labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    return name, str(namespace), labels


def role_from_dict(obj: Mapping[str, Any], kind: str | None = None) -> Role:
    kind = kind or str(obj.get("kind", ""))
    name, namespace, labels = _metadata(obj)
    if kind == ROLE and not namespace:
        raise RbacObjectError(f"Role {name}: metadata.namespace: missing")
    rules = tuple(Rule.from_dict(r) for r in obj.get("rules") or () if isinstance(r, Mapping))
    aggregation = None
    raw_aggregation = obj.get("aggregationRule")
    if kind == CLUSTER_ROLE and isinstance(raw_aggregation, Mapping):
        selectors = raw_aggregation.get("clusterRoleSelectors") or ()
        aggregation = tuple(LabelSelector.from_dict(s) for s in selectors if isinstance(s, Mapping))
    return Role(kind, name, namespace if kind == ROLE else "", rules, labels, aggregation)


def binding_from_dict(obj: Mapping[str, Any], kind: str | None = None) -> Binding:
    kind = kind or str(obj.get("kind", ""))
    name, namespace, _ = _metadata(obj)
    ref = _mapping(obj.get("roleRef"))
    role_kind, role_name = str(ref.get("kind", "")), str(ref.get("name", ""))
    if role_kind not in (ROLE, CLUSTER_ROLE) or not role_name:
        raise RbacObjectError(f"{kind} {name}: roleRef: must name a Role or ClusterRole")
    if kind == CLUSTER_ROLE_BINDING and role_kind != CLUSTER_ROLE:
        raise RbacObjectError(
            f"{kind} {name}: roleRef.kind: a ClusterRoleBinding can only bind a ClusterRole"
        )
    subjects = []
    for raw in obj.get("subjects") or ():
        if not isinstance(raw, Mapping):
            continue
        subject_kind, subject_name = str(raw.get("kind", "")), str(raw.get("name", ""))
        subject_namespace = str(raw.get("namespace") or "")
        if subject_kind == "ServiceAccount" and not subject_namespace:
            subject_namespace = namespace  # RBAC's default for a RoleBinding's ServiceAccount subject
        subjects.append(Subject(subject_kind, subject_name, subject_namespace))
    return Binding(
        kind, name, role_kind, role_name, tuple(subjects), namespace if kind == ROLE_BINDING else ""
    )


# --- what an identity holds -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One rule an identity holds, and where it comes from."""

    rule: Rule
    role: Role
    binding: Binding
    via: Subject  # the subject of the binding that matched the identity

    @property
    def namespace(self) -> str:
        """ "" for cluster-wide grants (ClusterRoleBinding), else the RoleBinding's namespace."""
        return self.binding.namespace

    def applies(self, ask: Ask) -> bool:
        if not ask.is_resource:
            return not self.namespace and self.rule.allows(ask)
        if self.namespace and ask.namespace != self.namespace:
            return False
        return self.rule.allows(ask)

    def describe(self) -> str:
        scope = f'in namespace "{self.namespace}"' if self.namespace else "cluster-wide"
        return f"{self.binding.ref} -> {self.role.ref} ({scope}, via {self.via.describe()})"


class Snapshot:
    """A consistent view of a cluster's RBAC objects, with aggregation resolved once.

    Immutable once built: the informer builds a new one on every change (RBAC objects change rarely,
    and a review must never see a half-applied update).
    """

    def __init__(self, roles: Iterable[Role] = (), bindings: Iterable[Binding] = ()) -> None:
        self.roles: dict[tuple[str, str, str], Role] = {}
        for role in roles:
            self.roles[(role.kind, role.namespace, role.name)] = role
        self.bindings: tuple[Binding, ...] = tuple(bindings)
        self._cluster_roles = sorted(
            (key, role) for key, role in self.roles.items() if role.kind == CLUSTER_ROLE
        )  # sorted once: every aggregated ClusterRole scans them (deterministic rule order)
        self._effective: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        for key in self.roles:
            self._effective[key] = self._resolve(key, set())
        self._by_subject: dict[tuple[str, str, str], list[Binding]] = {}
        for binding in self.bindings:
            for subject in binding.subjects:
                self._by_subject.setdefault((subject.kind, subject.namespace, subject.name), []).append(
                    binding
                )
        self._derived: dict[Hashable, Any] = {}

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` once per snapshot under ``key`` (a snapshot never changes, so neither does
        what is computed from it): every pod an agent creates asks for the same account's powers.
        At most ``DERIVED_LIMIT`` answers are kept; past that the memo starts over."""
        try:
            value: T = self._derived[key]
            return value
        except KeyError:
            pass
        if len(self._derived) >= DERIVED_LIMIT:
            self._derived = {}
        value = self._derived[key] = compute()
        return value

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Snapshot:
        """From RBAC object dicts (other kinds are the caller's business; see ``split_objects``)."""
        roles, bindings = [], []
        for obj in objects:
            kind = obj.get("kind")
            if kind in (ROLE, CLUSTER_ROLE):
                roles.append(role_from_dict(obj))
            elif kind in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
                bindings.append(binding_from_dict(obj))
        return cls(roles, bindings)

    def _resolve(self, key: tuple[str, str, str], seen: set[tuple[str, str, str]]) -> tuple[Rule, ...]:
        role = self.roles[key]
        if role.aggregation is None:
            return role.rules
        if key in seen:
            return role.rules
        seen = seen | {key}
        collected = list(role.rules)  # what the controller already filled in, if it ran
        known = set(collected)
        for other_key, other in self._cluster_roles:
            if other_key == key:
                continue
            if any(selector.matches(other.labels) for selector in role.aggregation):
                for rule in self._resolve(other_key, seen):
                    if rule not in known:
                        known.add(rule)
                        collected.append(rule)
        return tuple(collected)

    def with_role(self, role: Role) -> Snapshot:
        """A new Snapshot where ``role`` replaces (or joins) the role of its kind, namespace and name:
        what RBAC would grant if a write of it were admitted (aggregation recomputed)."""
        roles = dict(self.roles)
        roles[(role.kind, role.namespace, role.name)] = role
        return Snapshot(roles.values(), self.bindings)

    def effective_changes(self, other: Snapshot) -> list[tuple[tuple[str, str, str], tuple[Rule, ...]]]:
        """Roles whose effective rules differ in ``other``: ``((kind, namespace, name), rules in other)``."""
        return [
            (key, rules)
            for key, rules in sorted(other._effective.items())
            if self._effective.get(key) != rules
        ]

    def role(self, kind: str, name: str, namespace: str = "") -> Role | None:
        return self.roles.get((kind, namespace if kind == ROLE else "", name))

    def rules_of(self, kind: str, name: str, namespace: str = "") -> tuple[Rule, ...] | None:
        """The effective rules of a role (aggregation included); None when it does not exist."""
        return self._effective.get((kind, namespace if kind == ROLE else "", name))

    def _candidate_bindings(self, user: attributes.UserInfo) -> Iterator[tuple[Binding, Subject]]:
        seen: set[tuple[str, str, str]] = set()
        keys = [("User", "", user.username)]
        keys.extend(("Group", "", group) for group in user.groups)
        account = user.service_account
        if account is not None:
            keys.append(("ServiceAccount", account[0], account[1]))
        for key in keys:
            for binding in self._by_subject.get(key, ()):
                marker = (binding.kind, binding.namespace, binding.name)
                subject = next(s for s in binding.subjects if (s.kind, s.namespace, s.name) == key)
                if marker in seen:
                    continue
                seen.add(marker)
                yield binding, subject

    def grants(self, user: attributes.UserInfo) -> list[Grant]:
        """Every rule ``user`` holds, each with the binding and role it comes from.

        A binding to a role that does not exist grants nothing (as in RBAC), and a RoleBinding's
        ClusterRole contributes its resource rules only (non-resource URLs are cluster-wide).
        """
        found: list[Grant] = []
        for binding, subject in self._candidate_bindings(user):
            role_namespace = binding.namespace if binding.role_kind == ROLE else ""
            role = self.role(binding.role_kind, binding.role_name, role_namespace)
            rules = self.rules_of(binding.role_kind, binding.role_name, role_namespace)
            if role is None or rules is None:
                continue
            for rule in rules:
                if binding.namespace and not (rule.resources or rule.api_groups):
                    continue  # non-resource rules do nothing in a RoleBinding
                found.append(Grant(rule, role, binding, subject))
        return found

    def allows(self, user: attributes.UserInfo, ask: Ask) -> Grant | None:
        """The first grant that lets ``user`` do ``ask`` (RBAC's answer), or None."""
        for grant in self.grants(user):
            if grant.applies(ask):
                return grant
        return None

    def holders(self, kind: str, name: str, namespace: str = "") -> list[tuple[Binding, Subject]]:
        """Who is bound to a role: ``(binding, subject)`` pairs."""
        found: list[tuple[Binding, Subject]] = []
        for binding in self.bindings:
            role_namespace = binding.namespace if binding.role_kind == ROLE else ""
            if (binding.role_kind, role_namespace, binding.role_name) == (
                kind,
                namespace if kind == ROLE else "",
                name,
            ):
                found.extend((binding, subject) for subject in binding.subjects)
        return found


def rules_allow(rules: Sequence[Rule], ask: Ask) -> Rule | None:
    """The first rule of a list that grants ``ask`` (namespace scope is the caller's business)."""
    for rule in rules:
        if rule.allows(ask):
            return rule
    return None
