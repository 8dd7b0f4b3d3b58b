"""``agent-guard rbac audit``: what each agent identity is really granted, and what stops it.

The guard judges an agent's requests; RBAC decides what the agent may send at all. On a control plane
that runs only the admission webhook (EKS, GKE, AKS: users cannot add an authorization webhook), every
power only ``/authorize`` takes away - Secret reads, impersonation, ``escalate``/``bind``, admission
registration, ``nodes/proxy`` - is held in full by an agent whose RBAC grants it. This audit makes that
visible: for every identity the policy calls an agent, the effective grants (``webhook.rbac``: RBAC
semantics, aggregation resolved) that give one of ``webhook.powers.POWERS``, each with the binding and
role it comes from, classed as

- ``admission``: the admission guards judge every use of it;
- ``authorizer``: only the guard's ``/authorize`` stops it (``--authorizer=present``);
- ``not-stopped``: nothing installed stops it - an authorizer-only power without the authorizer, or a
  power whose guard is ``off`` or ``dry-run`` in the policy.

Identities come from the policy's ``agents`` selector. RBAC subjects are names, so patterns are
expanded against what the snapshot names: ServiceAccount subjects of bindings and (live, or from a
dump that includes them) ServiceAccount objects; one stand-in per pattern holds what *every* account it
matches holds through groups (``system:serviceaccounts[:<ns>]``, ``system:authenticated``). Groups,
username prefixes and ``extra`` matches get a stand-in member that holds what the group (and every
authenticated caller) holds; RBAC cannot say who else is in a group.

Pure apart from ``load_live``: the rest takes plain object dicts.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook import attributes, identity, policy, powers, rbac
from webhook.tools import inputs

SUFFIXES = (".yaml", ".yml", ".json")
SERVICE_ACCOUNT = "ServiceAccount"
Verdict = Literal["admission", "authorizer", "not-stopped"]
ORDER: tuple[Verdict, ...] = ("not-stopped", "authorizer", "admission")
LABELS = {"not-stopped": "NOT STOPPED", "authorizer": "AUTHORIZER", "admission": "ADMISSION"}


# --- input --------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """What the audit reads: the RBAC snapshot and the ServiceAccounts it could see."""

    snapshot: rbac.Snapshot
    service_accounts: tuple[tuple[str, str], ...] = ()
    listed_service_accounts: bool = False  # whether ServiceAccount objects were part of the input


def from_objects(objects: Iterable[tuple[str, Any]]) -> Cluster:
    """A ``Cluster`` from ``(source, object)`` pairs; every unusable object named in one InputError."""
    roles: list[rbac.Role] = []
    bindings: list[rbac.Binding] = []
    accounts: list[tuple[str, str]] = []
    listed = False
    problems: list[str] = []
    for source, obj in objects:
        if not isinstance(obj, dict):
            problems.append(f"{source}: expected a Kubernetes object, got {type(obj).__name__}")
            continue
        kind = obj.get("kind")
        try:
            if kind in (rbac.ROLE, rbac.CLUSTER_ROLE):
                roles.append(rbac.role_from_dict(obj))
            elif kind in (rbac.ROLE_BINDING, rbac.CLUSTER_ROLE_BINDING):
                bindings.append(rbac.binding_from_dict(obj))
            elif kind == SERVICE_ACCOUNT:
                listed = True
                metadata = obj.get("metadata")
                metadata = metadata if isinstance(metadata, dict) else {}
                name, namespace = metadata.get("name"), metadata.get("namespace")
                if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
                    raise rbac.RbacObjectError("ServiceAccount: metadata.name, metadata.namespace: required")
                accounts.append((namespace, name))
            else:
                problems.append(
                    f"{source}: unknown kind {kind!r}: expected Role, ClusterRole, RoleBinding, "
                    "ClusterRoleBinding or ServiceAccount (or a List of them)"
                )
        except rbac.RbacObjectError as exc:
            problems.append(f"{source}: {exc}")
    if problems:
        raise inputs.InputError("\n".join(problems))
    return Cluster(rbac.Snapshot(roles, bindings), tuple(sorted(set(accounts))), listed)


def load_files(paths: Sequence[str]) -> Cluster:
    """RBAC objects from files and folders (YAML or JSON, ``List`` kinds, ``kubectl get -o yaml``)."""
    objects, problems = inputs.objects(paths, SUFFIXES)
    if problems:
        raise inputs.InputError("\n".join(problems))
    return from_objects(objects)


# --- who the agents are -------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An agent identity to audit: a concrete one, or a stand-in for every identity a pattern matches."""

    label: str
    user: attributes.UserInfo
    selected_by: str
    stand_in: bool = False


def _segment(pattern: str) -> re.Pattern[str]:
    return re.compile("[^:/]*".join(re.escape(part) for part in pattern.split("*")))


def _account(namespace: str, name: str, selected_by: str) -> Identity:
    return Identity(
        f"ServiceAccount {namespace}/{name}", rbac.service_account_user(namespace, name), selected_by
    )


def identities(selector: policy.AgentSelector, cluster: Cluster) -> list[Identity]:
    """Every identity ``selector`` makes an agent, as far as the snapshot can name them."""
    snapshot = cluster.snapshot
    named_accounts: set[tuple[str, str]] = set(cluster.service_accounts)
    users: set[str] = set()
    sa_group_namespaces: set[str] = set()
    for binding in snapshot.bindings:
        for subject in binding.subjects:
            if subject.kind == SERVICE_ACCOUNT and subject.namespace and subject.name:
                named_accounts.add((subject.namespace, subject.name))
            elif subject.kind == "User":
                users.add(subject.name)
            elif subject.kind == "Group" and subject.name.startswith(rbac.SERVICE_ACCOUNTS + ":"):
                sa_group_namespaces.add(subject.name.removeprefix(rbac.SERVICE_ACCOUNTS + ":"))
    found: list[Identity] = []
    for pattern in selector.service_accounts:
        why = f"serviceAccounts: {pattern}"
        namespace_pattern, _, name_pattern = pattern.partition("/")
        matches = identity.Matcher(policy.AgentSelector(service_accounts=(pattern,)))
        if "*" not in pattern:
            found.append(_account(namespace_pattern, name_pattern, why))
            continue
        found.extend(
            _account(ns, name, why)
            for ns, name in sorted(named_accounts)
            if matches(attributes.UserInfo(f"{attributes.SA_PREFIX}{ns}:{name}"))
        )
        if "*" in namespace_pattern:
            candidates = {ns for ns, _ in named_accounts} | sa_group_namespaces
            namespaces = sorted(ns for ns in candidates if _segment(namespace_pattern).fullmatch(ns))
        else:
            namespaces = [namespace_pattern]
        for ns in namespaces:
            if "*" not in name_pattern:
                found.append(_account(ns, name_pattern, why))
                continue
            user = rbac.service_account_user(ns, name_pattern)  # '*' in a name matches no subject
            label = f"any ServiceAccount {ns}/{name_pattern}"
            found.append(Identity(label, user, f"{why}; what every such account holds via groups", True))
        if "*" in namespace_pattern:
            user = attributes.UserInfo(
                f"{attributes.SA_PREFIX}{pattern.replace('/', ':')}",
                (rbac.SERVICE_ACCOUNTS, rbac.AUTHENTICATED),
            )
            found.append(Identity(f"any ServiceAccount {pattern} (other namespaces)", user, why, True))
    for group in selector.groups:
        user = attributes.UserInfo(f"(member of {group})", (group, rbac.AUTHENTICATED))
        found.append(Identity(f"any member of Group {group}", user, f"groups: {group}", stand_in=True))
    for name in selector.usernames:
        found.append(
            Identity(f"User {name}", attributes.UserInfo(name, (rbac.AUTHENTICATED,)), f"usernames: {name}")
        )
    for prefix in selector.username_prefixes:
        why = f"usernamePrefixes: {prefix}"
        found.extend(
            Identity(f"User {name}", attributes.UserInfo(name, (rbac.AUTHENTICATED,)), why)
            for name in sorted(users)
            if name.startswith(prefix)
        )
        user = attributes.UserInfo(f"{prefix}*", (rbac.AUTHENTICATED,))
        found.append(Identity(f"any User {prefix}*", user, why, stand_in=True))
    for match in selector.extra:
        why = f"extra: {match.key}={match.value}"
        user = attributes.UserInfo(f"(extra {match.key}={match.value})", (rbac.AUTHENTICATED,))
        found.append(Identity(f"any caller with extra {match.key}={match.value}", user, why, True))
    unique: dict[tuple[str, tuple[str, ...]], Identity] = {}
    for item in found:
        unique.setdefault((item.user.username, item.user.groups), item)
    return list(unique.values())


# --- what they hold ------------------------------------------------------------------------------


@dataclass
class Exposure:
    """One power an identity holds, what stops it, and every grant that gives it."""

    power: powers.Power
    verdict: Verdict
    reason: str
    held: list[powers.Held] = field(default_factory=list)


@dataclass
class Finding:
    identity: Identity
    exposures: list[Exposure]


def classify(power: powers.Power, loaded: policy.Policy, authorizer: bool) -> tuple[Verdict, str]:
    """Which installed part stops an agent holding ``power``, and why (in words)."""
    mode = loaded.mode_of(power.guard) if power.guard in loaded.guards else "off"
    if mode != "enforce":
        return "not-stopped", f"the {power.guard} guard is {mode} in the policy"
    if power.stage == powers.ADMISSION:
        return "admission", f"admission judges each use ({power.guard})"
    if authorizer:
        return "authorizer", f"only /authorize stops it ({power.guard})"
    return "not-stopped", f"only /authorize stops it ({power.guard}), and it is absent"


def audit(loaded: policy.Policy, cluster: Cluster, authorizer: bool) -> list[Finding]:
    findings: list[Finding] = []
    for who in identities(loaded.agents, cluster):
        by_power: dict[str, Exposure] = {}
        for item in powers.held(cluster.snapshot.grants(who.user), named=True):
            exposure = by_power.get(item.power.id)
            if exposure is None:
                verdict, reason = classify(item.power, loaded, authorizer)
                exposure = by_power[item.power.id] = Exposure(item.power, verdict, reason)
            exposure.held.append(item)
        position = {power.id: index for index, power in enumerate(powers.POWERS)}
        exposures = sorted(by_power.values(), key=lambda e: (ORDER.index(e.verdict), position[e.power.id]))
        findings.append(Finding(who, exposures))
    return findings


def unstopped(findings: Sequence[Finding]) -> bool:
    return any(e.verdict == "not-stopped" for f in findings for e in f.exposures)


# --- output --------------------------------------------------------------------------------------


def short(power: powers.Power) -> str:
    """The power in a few words: the table's note on armed identities ("their pods run unjudged as
    this identity") is not true of an agent, whose own writes admission judges."""
    return power.what.split(" (", 1)[0]


def describe_rule(rule: rbac.Rule) -> str:
    parts = []
    for key, values in rule.to_dict().items():
        shown = ",".join(f'"{v}"' if v == "" else v for v in values)
        parts.append(f"{key}=[{shown}]")
    return " ".join(parts)


def _grant_json(item: powers.Held) -> dict[str, Any]:
    grant = item.grant
    return {
        "binding": grant.binding.ref,
        "role": grant.role.ref,
        "scope": grant.namespace or "cluster-wide",
        "via": grant.via.describe(),
        "rule": grant.rule.to_dict(),
        "allows": item.ask.describe(),
    }


def summary(findings: Sequence[Finding]) -> dict[str, Any]:
    counts = {verdict: 0 for verdict in ORDER}
    for finding in findings:
        for exposure in finding.exposures:
            counts[exposure.verdict] += 1
    exposed = [f.identity.label for f in findings if any(e.verdict == "not-stopped" for e in f.exposures)]
    return {"identities": len(findings), "byClass": counts, "unstoppedIdentities": exposed}


def as_json(findings: Sequence[Finding], authorizer: bool, cluster: Cluster) -> dict[str, Any]:
    return {
        "authorizer": "present" if authorizer else "absent",
        "serviceAccountsListed": cluster.listed_service_accounts,
        "identities": [
            {
                "identity": f.identity.label,
                "username": f.identity.user.username,
                "groups": list(f.identity.user.groups),
                "selectedBy": f.identity.selected_by,
                "standIn": f.identity.stand_in,
                "exposures": [
                    {
                        "power": e.power.id,
                        "what": short(e.power),
                        "guard": e.power.guard,
                        "stage": e.power.stage,
                        "class": e.verdict,
                        "reason": e.reason,
                        "grants": [_grant_json(item) for item in e.held],
                    }
                    for e in f.exposures
                ],
            }
            for f in findings
        ],
        "summary": summary(findings),
    }


def _header(authorizer: bool, findings: Sequence[Finding]) -> str:
    stage = (
        "present: powers only /authorize takes away are stopped by it"
        if authorizer
        else "absent (admission only, as on EKS/GKE/AKS): powers only /authorize takes away are NOT stopped"
    )
    return f"{len(findings)} agent identit{'y' if len(findings) == 1 else 'ies'}; authorizer {stage}"


def _footer(findings: Sequence[Finding]) -> str:
    counts = summary(findings)
    by_class = counts["byClass"]
    exposed = counts["unstoppedIdentities"]
    plural = "y" if len(exposed) == 1 else "ies"
    return (
        f"summary: {by_class['not-stopped']} power(s) nothing stops, {by_class['authorizer']} stopped only "
        f"by the authorizer, {by_class['admission']} stopped by admission; "
        + (f"{len(exposed)} identit{plural} exposed" if exposed else "no identity exposed")
    )


def render_text(findings: Sequence[Finding], authorizer: bool, cluster: Cluster) -> str:
    lines = [_header(authorizer, findings)]
    if not cluster.listed_service_accounts:
        lines.append(
            "note: no ServiceAccount objects were read: accounts are known from binding subjects only "
            "(stand-ins cover the group grants of the others)"
        )
    for finding in findings:
        who = finding.identity
        lines += ["", f"{who.label}  ({who.selected_by})"]
        if not finding.exposures:
            lines.append("  holds none of the powers the guard denies to agents")
        for exposure in finding.exposures:
            power = exposure.power
            lines.append(f"  {LABELS[exposure.verdict]:<11}  {short(power)} [{power.id}]: {exposure.reason}")
            for item in exposure.held:
                lines.append(f"      {item.grant.describe()}")
                lines.append(f"        rule {describe_rule(item.grant.rule)}")
    lines += ["", _footer(findings)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(findings: Sequence[Finding], authorizer: bool, cluster: Cluster) -> str:
    lines = ["# RBAC audit of agent identities", "", _header(authorizer, findings) + ".", ""]
    lines += [
        "| Identity | Power | Stopped by | Binding → role | Scope | Via |",
        "|---|---|---|---|---|---|",
    ]
    for finding in findings:
        if not finding.exposures:
            lines.append(f"| {_cell(finding.identity.label)} | (none) | | | | |")
        for exposure in finding.exposures:
            for item in exposure.held:
                grant = item.grant
                lines.append(
                    f"| {_cell(finding.identity.label)} | {_cell(short(exposure.power))} "
                    f"(`{exposure.power.id}`) | {LABELS[exposure.verdict].lower()} | "
                    f"{_cell(grant.binding.ref)} → {_cell(grant.role.ref)} | "
                    f"{grant.namespace or 'cluster-wide'} | {_cell(grant.via.describe())} |"
                )
    if not cluster.listed_service_accounts:
        lines += ["", "ServiceAccounts are known from binding subjects only (none were listed)."]
    lines += ["", _footer(findings)]
    return "\n".join(lines)


def render_prometheus(findings: Sequence[Finding], authorizer: bool) -> str:
    """The audit as Prometheus metrics (text format), for a textfile collector or a push gateway, so
    a dashboard shows when an agent regains a dangerous grant."""
    import prometheus_client  # noqa: PLC0415 - only this output needs it

    registry = prometheus_client.CollectorRegistry()
    held = prometheus_client.Gauge(
        "agent_guard_rbac_agent_power_grants",
        "Grants through which an agent identity holds a power the guard denies agents, by what stops it.",
        ["identity", "power", "stage", "class"],
        registry=registry,
    )
    exposed = prometheus_client.Gauge(
        "agent_guard_rbac_exposed_identities",
        "Agent identities holding a power nothing installed stops.",
        ["authorizer"],
        registry=registry,
    )
    for finding in findings:
        for e in finding.exposures:
            held.labels(finding.identity.label, e.power.id, e.power.stage, e.verdict).set(len(e.held))
    exposed.labels("present" if authorizer else "absent").set(len(summary(findings)["unstoppedIdentities"]))
    return prometheus_client.generate_latest(registry).decode().rstrip("\n")


def render(findings: Sequence[Finding], authorizer: bool, cluster: Cluster, output: str) -> str:
    if output == "prometheus":
        return render_prometheus(findings, authorizer)
    if output == "json":
        return json.dumps(as_json(findings, authorizer, cluster), indent=2, ensure_ascii=False)
    if output == "markdown":
        return render_markdown(findings, authorizer, cluster)
    return render_text(findings, authorizer, cluster)


# --- live ----------------------------------------------------------------------------------------

LISTS = (  # (API class, method, kind): the typed client's list calls, across client versions
    ("RbacAuthorizationV1Api", "list_cluster_role", "ClusterRole"),
    ("RbacAuthorizationV1Api", "list_role_for_all_namespaces", "Role"),
    ("RbacAuthorizationV1Api", "list_cluster_role_binding", "ClusterRoleBinding"),
    ("RbacAuthorizationV1Api", "list_role_binding_for_all_namespaces", "RoleBinding"),
)
ACCOUNTS = ("CoreV1Api", "list_service_account_for_all_namespaces", SERVICE_ACCOUNT)
TIMEOUT_SECONDS = 15


def load_live(kubeconfig: str | None, context: str | None) -> tuple[Cluster, list[str]]:
    """Read (list, nothing else) the cluster's RBAC objects and ServiceAccounts with the kubeconfig's
    identity. Returns the cluster and warnings; raises InputError saying what failed."""
    import kubernetes  # noqa: PLC0415 - only the live mode needs the client (and its import time)
    import urllib3  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    where = kubeconfig or "the default kubeconfig"
    try:
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, TypeError, ValueError) as exc:
        raise inputs.InputError(f"{where}: cannot use this kubeconfig: {exc}") from None
    server = client.configuration.host
    client.configuration.retries = 0

    def get(api: str, method: str, kind: str) -> list[tuple[str, Any]]:
        call = getattr(getattr(kubernetes.client, api)(client), method)
        what = f"list {kind}s"
        try:
            response = call(_preload_content=False, _request_timeout=TIMEOUT_SECONDS)
        except kubernetes.client.ApiException as exc:
            reason = exc.reason or ""
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                reason = json.loads(exc.body or "").get("message", reason)
            hint = " (the audit needs list on the RBAC kinds)" if exc.status == 403 else ""
            raise inputs.InputError(f"{server}: {what}: HTTP {exc.status}: {reason}{hint}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise inputs.InputError(f"{server}: cannot reach the cluster ({where}): {exc}") from None
        try:
            body = json.loads(response.data)
        except ValueError as exc:
            raise inputs.InputError(f"{server}: {what}: not JSON: {exc}") from None
        items = body.get("items") if isinstance(body, dict) else None
        return [(f"{server} {what}#{i}", {"kind": kind, **item}) for i, item in enumerate(items or [])]

    objects = [item for api, method, kind in LISTS for item in get(api, method, kind)]
    warnings: list[str] = []
    try:
        objects.extend(get(*ACCOUNTS))
    except inputs.InputError as exc:
        warnings.append(f"{exc}: accounts are known from binding subjects only")
    cluster = from_objects(objects)
    cluster.listed_service_accounts = not warnings
    return cluster, warnings
