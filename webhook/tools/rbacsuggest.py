"""``agent-guard rbac suggest``: least-privilege RBAC for each agent, from what it really did.

Agents tend to run bound to ``cluster-admin`` or ``edit`` because nobody knows what they need. The
apiserver's audit log does: every request of every agent, with its verb, resource, namespace and
outcome. This reads the same logs as ``agent-guard replay`` (``webhook.tools.audit``), keeps the
successful (2xx) requests of the policy's agent identities, and writes the Roles, ClusterRoles and
bindings that grant exactly those - namespaced where the requests were namespaced - minus what the
guard forbids:

- a request the policy's guards would deny (judged like ``replay``: ``/authorize`` and ``/validate``,
  dry-run findings included) is left out, whatever RBAC let through when it was recorded;
- an agent that writes Roles gets ``create roles`` (judged by ``rbac-escalation``) but never
  ``escalate``: RBAC then lets it write only roles whose rules it holds itself;
- a power only the authorizer takes away (``webhook.powers``: Secret reads, ``nodes/proxy``,
  ``escalate``/``bind``/impersonation, admission registration) is never suggested: on a control plane
  without the authorizer, RBAC is all that would stop it;
- a power the admission guards judge (creating Pods and workloads, RBAC writes, ...) is suggested when
  the agent used it and the guard allowed that use, and listed as relying on the admission webhook;
- what every authenticated caller already holds (discovery, ``selfsubject*reviews``) is left out.

Cluster-scoped objects are named (``resourceNames``) for verbs that name one object (get, update,
patch, delete): that is the only narrowing RBAC offers there. Namespaced rules are not named: the
namespace is the boundary, and agents create objects under new names. The output is deterministic YAML
for ``kubectl apply``, with a comment block saying what was left out and why.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook import attributes, engine, powers, rbac
from webhook.tools import audit, rbacaudit, verdicts

NAMED_VERBS = frozenset({"get", "update", "patch", "delete"})
# Granted to every authenticated caller by the default ClusterRoles system:discovery,
# system:public-info-viewer and system:basic-user (bound to system:authenticated).
EVERYONE_URLS = ("/api", "/apis", "/healthz", "/livez", "/readyz", "/version", "/openapi")
EVERYONE_RESOURCES = frozenset(
    {
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
        ("authentication.k8s.io", "selfsubjectreviews"),
    }
)
PREFIX = "agent-guard-suggested"


@dataclass
class Agent:
    """What one agent identity did that will be granted, and what was left out."""

    user: attributes.UserInfo
    # scope ("" = cluster) -> (group, resource, verb) -> names used ("" when a request had none)
    uses: dict[str, dict[tuple[str, str, str], set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    urls: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    left_out: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, why) -> requests
    admission_only: dict[str, str] = field(default_factory=dict)  # what -> power
    requests: int = 0

    @property
    def label(self) -> str:
        account = self.user.service_account
        if account is not None:
            return f"ServiceAccount {account[0]}/{account[1]}"
        return f"User {self.user.username}"


@dataclass
class Stats:
    agent_requests: int = 0
    unsuccessful: int = 0


def _ask(event: Mapping[str, Any], ref: Mapping[str, Any] | None) -> rbac.Ask:
    verb = str(event["verb"])
    if ref is None:
        path = audit.access_request(event, None, attributes.UserInfo("")).path
        return rbac.Ask(verb, path=path)
    group, resource = str(ref.get("apiGroup", "")), str(ref.get("resource", ""))
    namespace, name = str(ref.get("namespace", "")), str(ref.get("name", ""))
    if group == "" and resource == "namespaces":
        namespace, name = "", name or namespace  # a Namespace is cluster-scoped, whatever the ref says
    if verb == "create" and not ref.get("subresource"):
        name = ""  # RBAC authorizes a create on the collection
    return rbac.Ask(verb, resource, group, str(ref.get("subresource", "")), namespace, name)


def _everyone(ask: rbac.Ask) -> bool:
    if not ask.is_resource:
        return any(ask.path == url or ask.path.startswith(url + "/") for url in EVERYONE_URLS)
    return (ask.group, ask.resource) in EVERYONE_RESOURCES and ask.verb == "create"


def _bare_rule(ask: rbac.Ask) -> rbac.Rule:
    if not ask.is_resource:
        return rbac.Rule(verbs=(ask.verb,), non_resource_urls=(ask.path,))
    resource = f"{ask.resource}/{ask.sub_resource}" if ask.sub_resource else ask.resource
    return rbac.Rule(verbs=(ask.verb,), api_groups=(ask.group,), resources=(resource,))


def _denied_by(
    judge: engine.Engine, event: Mapping[str, Any], ref: Mapping[str, Any] | None, user: attributes.UserInfo
) -> list[str]:
    """The guards that would deny the request itself (as ``replay`` judges it: ``/authorize``, then
    ``/validate`` for writes). The checks RBAC derives (``escalate`` on a role write) are left to RBAC:
    refused, it falls back to "does the agent hold every rule it writes", which is what we want."""
    found = [judge.authorize(audit.access_request(event, ref, user))]
    if ref is not None:
        admission = audit.admission_request(event, ref, user, [])
        if admission is not None:
            found.append(judge.admit(admission))
    return list(dict.fromkeys(g for v in found if verdicts.would_deny(v) for g in v.guards))


def collect(
    judge: engine.Engine, names: Sequence[str], events: audit.Stats, stats: Stats
) -> dict[str, Agent]:
    """Every agent's successful requests from the logs, sorted into granted and left out."""
    agents: dict[str, Agent] = {}
    for _source, event in audit.unique_events(names, events):
        caller = audit.user_info(event["user"])
        impersonated = event.get("impersonatedUser")
        user = audit.user_info(impersonated) if isinstance(impersonated, dict) else caller
        if not judge.is_agent(user):
            continue
        stats.agent_requests += 1
        status = event.get("responseStatus")
        code = status.get("code") if isinstance(status, dict) else None
        if not isinstance(code, int) or not 200 <= code < 300:
            stats.unsuccessful += 1
            continue
        agent = agents.setdefault(user.username, Agent(user))
        agent.requests += 1
        ref = event.get("objectRef") if isinstance(event.get("objectRef"), dict) else None
        ask = _ask(event, ref)
        what = ask.describe()
        if _everyone(ask):
            agent.left_out[(what, "every authenticated caller already holds it (default roles)")] += 1
            continue
        denied = _denied_by(judge, event, ref, user)
        if denied:
            agent.left_out[(what, f"the guard denies it ({', '.join(denied)})")] += 1
            continue
        held = powers.powers_of_rules([_bare_rule(ask)])
        authorizer_only = [power for power, _ in held if power.stage == powers.AUTHORIZER]
        if authorizer_only:
            power = authorizer_only[0]
            why = f"{rbacaudit.short(power)} [{power.id}] is stopped only by the authorizer: never suggested"
            agent.left_out[(what, why)] += 1
            continue
        for power, _ in held:
            agent.admission_only[what] = f"{rbacaudit.short(power)} [{power.id}], judged by {power.guard}"
        if not ask.is_resource:
            agent.urls[ask.path].add(ask.verb)
            continue
        resource = f"{ask.resource}/{ask.sub_resource}" if ask.sub_resource else ask.resource
        agent.uses[ask.namespace][(ask.group, resource, ask.verb)].add(ask.name)
    return agents


# --- rules and objects ---------------------------------------------------------------------------


def rules_for(uses: Mapping[tuple[str, str, str], set[str]], cluster: bool) -> list[dict[str, Any]]:
    """Compact, sorted PolicyRules covering ``uses``: one per (group, names), resources merged when
    they need the same verbs."""
    by_resource: dict[tuple[str, str, tuple[str, ...]], set[str]] = defaultdict(set)
    for (group, resource, verb), used_names in uses.items():
        names: tuple[str, ...] = ()
        if cluster and verb in NAMED_VERBS and "" not in used_names:
            names = tuple(sorted(used_names))
        by_resource[(group, resource, names)].add(verb)
    merged: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for (group, resource, names), verbs in by_resource.items():
        merged[(group, tuple(sorted(verbs)), names)].append(resource)
    rules = []
    for (group, granted, names), resources in sorted(merged.items()):
        rule: dict[str, Any] = {"apiGroups": [group], "resources": sorted(resources)}
        if names:
            rule["resourceNames"] = list(names)
        rule["verbs"] = list(granted)
        rules.append(rule)
    return rules


def object_name(user: attributes.UserInfo) -> str:
    account = user.service_account
    who = f"{account[0]}:{account[1]}" if account is not None else user.username
    return f"{PREFIX}:{who.replace('/', '-').replace('%', '-')}"


def subject(user: attributes.UserInfo) -> dict[str, str]:
    account = user.service_account
    if account is not None:
        return {"kind": "ServiceAccount", "name": account[1], "namespace": account[0]}
    return {"kind": "User", "apiGroup": rbac.GROUP, "name": user.username}


def _metadata(name: str, namespace: str, user: attributes.UserInfo) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["annotations"] = {"agent-guard.io/suggested-for": user.username}
    return metadata


def objects_for(agent: Agent) -> list[dict[str, Any]]:
    """The ClusterRole (+ binding) and one Role (+ binding) per namespace that ``agent`` needs."""
    name = object_name(agent.user)
    api = f"{rbac.GROUP}/v1"
    found: list[dict[str, Any]] = []
    cluster_rules = rules_for(agent.uses.get("", {}), cluster=True)
    for url, verbs in sorted(agent.urls.items()):
        cluster_rules.append({"nonResourceURLs": [url], "verbs": sorted(verbs)})
    if cluster_rules:
        found.append(
            {
                "apiVersion": api,
                "kind": rbac.CLUSTER_ROLE,
                "metadata": _metadata(name, "", agent.user),
                "rules": cluster_rules,
            }
        )
        found.append(
            {
                "apiVersion": api,
                "kind": rbac.CLUSTER_ROLE_BINDING,
                "metadata": _metadata(name, "", agent.user),
                "roleRef": {"apiGroup": rbac.GROUP, "kind": rbac.CLUSTER_ROLE, "name": name},
                "subjects": [subject(agent.user)],
            }
        )
    for namespace in sorted(ns for ns in agent.uses if ns):
        found.append(
            {
                "apiVersion": api,
                "kind": rbac.ROLE,
                "metadata": _metadata(name, namespace, agent.user),
                "rules": rules_for(agent.uses[namespace], cluster=False),
            }
        )
        found.append(
            {
                "apiVersion": api,
                "kind": rbac.ROLE_BINDING,
                "metadata": _metadata(name, namespace, agent.user),
                "roleRef": {"apiGroup": rbac.GROUP, "kind": rbac.ROLE, "name": name},
                "subjects": [subject(agent.user)],
            }
        )
    return found


def comment_block(agents: Iterable[Agent], sources: Sequence[str], stats: Stats) -> list[str]:
    agents = list(agents)
    lines = [
        f"Suggested by agent-guard rbac suggest from {sum(a.requests for a in agents)} successful "
        f"request(s) of {len(agents)} agent identit{'y' if len(agents) == 1 else 'ies'} in "
        f"{', '.join(sources)} ({stats.unsuccessful} unsuccessful agent request(s) ignored).",
        "Review, apply (kubectl apply -f), then remove the agents' broader bindings.",
    ]
    for agent in agents:
        if agent.left_out:
            lines += ["", f"Left out for {agent.label} (it did these; they are not granted):"]
            for (what, why), count in sorted(agent.left_out.items()):
                lines.append(f"  {what} ({count}x): {why}")
        if agent.admission_only:
            lines += ["", f"Granted to {agent.label}, but only the admission webhook judges each use:"]
            lines.extend(f"  {what}: {power}" for what, power in sorted(agent.admission_only.items()))
    return lines


class _Dumper(yaml.SafeDumper):
    """Block mappings, lists of names on one line (``verbs: [get, list]``), as RBAC is usually written."""


def _string_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = bool(data) and all(isinstance(item, str) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _string_list)


def render(agents: Mapping[str, Agent], sources: Sequence[str], stats: Stats) -> str:
    ordered = [agents[name] for name in sorted(agents)]
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment_block(ordered, sources, stats))
    documents = [obj for agent in ordered for obj in objects_for(agent)]
    body = "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)
        for doc in documents
    )
    return header + ("---\n" + body if body else "")


def object_count(agents: Mapping[str, Agent]) -> int:
    return sum(len(objects_for(agent)) for agent in agents.values())
