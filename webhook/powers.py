"""The powers the guard denies to agents, as RBAC grants them: one table for the guards and the tools.

An agent's own requests are judged by the guard families. An identity the agent can *arm* — a
ServiceAccount it binds a role to, the account a workload it launches runs as — is not an agent, so
the guard never judges what it does: whatever such an identity holds, the agent holds. This table
names each power the guard takes from agents, the authorization attributes that grant it, and which
of the guard's endpoints stops an agent that holds it:

- ``admission``: the admission webhook judges the agent's write (it sees the object);
- ``authorizer``: only the authorization webhook sees it (reads, impersonation, ``escalate``/``bind``,
  admission registration), so on a control plane without it (EKS, GKE, AKS) nothing does.

``rbac-escalation`` refuses bindings that hand any of these to anyone, ``workload-identity`` refuses
agent workloads that run as an account holding one, and ``agent-guard rbac audit`` reports which an
agent holds and what stops it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from webhook import podspec, rbac

Stage = Literal["admission", "authorizer"]
ADMISSION: Stage = "admission"
AUTHORIZER: Stage = "authorizer"

# Every kind whose pod spec a controller turns into pods (the pod-spec guards' own table); templates
# that nothing runs by itself are left out.
WORKLOAD_RESOURCES = tuple(
    key
    for key in podspec.TEMPLATE_PATHS
    if key not in (("", "podtemplates"), ("apps", "controllerrevisions"))
)
# Constrained impersonation (KEP-5284) grants narrower verbs; each is still impersonation.
CONSTRAINED_IMPERSONATION = (
    ("impersonate:user-info", ("users", "groups", "userextras/scopes", "uids")),
    ("impersonate:serviceaccount", ("serviceaccounts",)),
    ("impersonate:arbitrary-node", ("nodes",)),
    ("impersonate:associated-node", ("nodes",)),
)


@dataclass(frozen=True, slots=True)
class Power:
    id: str
    what: str  # for messages: "read Secrets"
    guard: str  # the family that takes it from agents
    stage: Stage
    asks: tuple[rbac.Ask, ...]


def _asks(verbs: Sequence[str], group: str, *resources: str) -> tuple[rbac.Ask, ...]:
    found: list[rbac.Ask] = []
    for resource in resources:
        name, _, sub = resource.partition("/")
        found.extend(rbac.Ask(verb, name, group, sub) for verb in verbs)
    return tuple(found)


WRITE = ("create", "update", "patch")

POWERS: tuple[Power, ...] = (
    Power(
        "read-secrets",
        "read Secrets",
        "secret-access",
        AUTHORIZER,
        _asks(("get", "list", "watch"), "", "secrets"),
    ),
    Power(
        "mint-tokens",
        "request tokens for ServiceAccounts",
        "secret-access",
        ADMISSION,
        _asks(("create",), "", "serviceaccounts/token"),
    ),
    Power(
        "exec",
        "exec, attach, port-forward or debug (ephemeral containers) in pods",
        "secret-access",
        ADMISSION,
        (
            *_asks(("create", "get"), "", "pods/exec", "pods/attach", "pods/portforward"),
            *_asks(("update", "patch"), "", "pods/ephemeralcontainers"),  # kubectl debug
        ),
    ),
    Power(
        "node-proxy",
        "proxy to kubelets",
        "secret-access",
        AUTHORIZER,
        _asks(("get", "create"), "", "nodes/proxy"),
    ),
    Power(
        "run-workloads",
        "create pods or workloads (their pods run unjudged as this identity)",
        "privileged-workload",
        ADMISSION,
        tuple(a for group, resource in WORKLOAD_RESOURCES for a in _asks(("create",), group, resource)),
    ),
    Power(
        "write-rbac",
        "write Roles, ClusterRoles or their bindings",
        "rbac-escalation",
        ADMISSION,
        _asks(WRITE, rbac.GROUP, "roles", "clusterroles", "rolebindings", "clusterrolebindings"),
    ),
    Power(
        "escalate",
        "escalate, bind or impersonate",
        "rbac-escalation",
        AUTHORIZER,
        (
            *_asks(("escalate",), rbac.GROUP, "roles", "clusterroles"),
            *_asks(("bind",), rbac.GROUP, "roles", "clusterroles"),
            *_asks(("impersonate",), "", "users", "groups", "serviceaccounts"),
            *_asks(("impersonate",), "authentication.k8s.io", "userextras/scopes", "uids"),
            *(a for verb, resources in CONSTRAINED_IMPERSONATION for a in _asks((verb,), "", *resources)),
            *(
                a
                for verb, resources in CONSTRAINED_IMPERSONATION
                for a in _asks((verb,), "authentication.k8s.io", *resources)
            ),
        ),
    ),
    Power(
        "sign-certificates",
        "create or approve CertificateSigningRequests",
        "rbac-escalation",
        ADMISSION,
        (
            *_asks(("create",), "certificates.k8s.io", "certificatesigningrequests"),
            *_asks(("update", "patch"), "certificates.k8s.io", "certificatesigningrequests/approval"),
            *_asks(("approve",), "certificates.k8s.io", "signers"),
        ),
    ),
    Power(
        "api-aggregation",
        "register or repoint aggregated APIs (APIService objects)",
        "guard-tamper",
        ADMISSION,
        _asks((*WRITE, "delete"), "apiregistration.k8s.io", "apiservices"),
    ),
    Power(
        "delete-namespaces",
        "delete Namespaces",
        "namespace-delete",
        ADMISSION,
        _asks(("delete", "deletecollection"), "", "namespaces"),
    ),
    Power(
        "admission-config",
        "change admission webhooks or policies",
        "guard-tamper",
        AUTHORIZER,
        _asks(
            (*WRITE, "delete"),
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        ),
    ),
)

BY_ID = {power.id: power for power in POWERS}


@dataclass(frozen=True, slots=True)
class Held:
    """A power an identity holds, through one grant, for one of the power's asks."""

    power: Power
    ask: rbac.Ask
    grant: rbac.Grant


def _as_granted(ask: rbac.Ask, rule: rbac.Rule, named: bool) -> rbac.Ask:
    """``ask`` as ``rule`` would grant it: with ``named``, for the first of the rule's resourceNames
    (a create or deletecollection of the resource itself carries no name: RBAC never grants it by name)."""
    nameless = ask.verb in ("create", "deletecollection") and not ask.sub_resource
    if named and rule.resource_names and ask.is_resource and not nameless:
        return dataclasses.replace(ask, name=rule.resource_names[0])
    return ask


def held(
    grants: Iterable[rbac.Grant], powers: Sequence[Power] = POWERS, *, named: bool = False
) -> Iterator[Held]:
    """Each power the grants give, once per (power, grant): the first ask of the power it matches.

    Namespace scope does not matter here: a power held in one namespace is still the power. With
    ``named``, a rule restricted by ``resourceNames`` counts too (reading *one* Secret is still
    reading Secrets; the ask then carries the first name): what an audit reports, and what the guard
    refuses to hand out. Without ``named``, only grants that cover any object of the kind count.
    """
    for grant in grants:
        for power in powers:
            for ask in power.asks:
                granted = _as_granted(ask, grant.rule, named)
                if grant.rule.allows(granted):
                    yield Held(power, granted, grant)
                    break


def powers_of_rules(
    rules: Iterable[rbac.Rule], powers: Sequence[Power] = POWERS, *, named: bool = False
) -> list[tuple[Power, rbac.Rule]]:
    """Which powers a list of rules grants (the first rule that grants each); ``named`` as in ``held``."""
    found: list[tuple[Power, rbac.Rule]] = []
    rules = tuple(rules)
    for power in powers:
        for rule in rules:
            if any(rule.allows(_as_granted(ask, rule, named)) for ask in power.asks):
                found.append((power, rule))
                break
    return found
