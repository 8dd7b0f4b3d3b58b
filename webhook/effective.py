"""Effective permissions for the guard families: what an account or a role really grants.

Names lie: a custom ClusterRole can grant what ``cluster-admin`` grants, and ``default`` can be bound
to anything. When the guard has an RBAC view (``base.Context.rbac``), ``rbac-escalation`` and
``workload-identity`` judge by the powers of ``webhook.powers`` that the roles and accounts involved
hold, computed by ``webhook.rbac``; this module holds the pieces both share. Not a family (no
``FAMILY``): helpers, like ``podspec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from webhook import powers, rbac
from webhook.guards import base

RETRY = "retry in a few seconds"


class NotSynced(Exception):
    """The guard has an RBAC source but has not read the cluster's RBAC yet."""


def snapshot(ctx: base.Context) -> rbac.Snapshot | None:
    """The RBAC snapshot to judge against; None without a source (judge by names); NotSynced before
    the first complete read (the caller refuses, asking to retry)."""
    if ctx.rbac is None:
        return None
    current = ctx.rbac.snapshot()
    if current is None:
        raise NotSynced
    return current


def not_synced(what: str) -> str:
    return (
        f"the guard has not finished reading the cluster's Roles, ClusterRoles and bindings yet, so it "
        f"cannot judge {what} by what they grant; agents' requests that need it are refused until "
        f"then: {RETRY}"
    )


def first_per_power(items: Iterable[powers.Held]) -> list[powers.Held]:
    """One ``Held`` per power (the first grant found), in the order of ``powers.POWERS``."""
    found: dict[str, powers.Held] = {}
    for item in items:
        found.setdefault(item.power.id, item)
    order = {power.id: index for index, power in enumerate(powers.POWERS)}
    return sorted(found.values(), key=lambda item: order[item.power.id])


def account_powers(snapshot: rbac.Snapshot, namespace: str, account: str) -> tuple[powers.Held, ...]:
    """The powers a ServiceAccount holds, through its own, its namespace's and its groups' bindings
    (grants restricted by resourceNames count: reading one Secret is reading Secrets). Computed once
    per account and snapshot."""
    user = rbac.service_account_user(namespace, account)
    return snapshot.derived(
        ("account_powers", user.username),
        lambda: tuple(first_per_power(powers.held(snapshot.grants(user), named=True))),
    )


def rule_powers(rules: Iterable[rbac.Rule]) -> list[tuple[powers.Power, rbac.Rule]]:
    """The powers a role's rules grant, a rule restricted to some names included (one Secret is still
    a Secret the agent could not read itself)."""
    return powers.powers_of_rules(rules, named=True)


def describe_rule(rule: rbac.Rule) -> str:
    verbs = ",".join(rule.verbs) or "(no verbs)"
    if rule.non_resource_urls and not rule.resources:
        return f"{verbs} on {', '.join(rule.non_resource_urls)}"
    groups = ",".join(g or '""' for g in rule.api_groups)
    names = f" named {', '.join(rule.resource_names)}" if rule.resource_names else ""
    return f"{verbs} on {','.join(rule.resources)} (apiGroups {groups}){names}"


def describe_held(items: Sequence[powers.Held]) -> str:
    """``read Secrets (via ClusterRoleBinding x -> ClusterRole y (cluster-wide, via Group z)); …``"""
    return "; ".join(f"{item.power.what} (via {item.grant.describe()})" for item in items)


def describe_powers(found: Sequence[tuple[powers.Power, rbac.Rule]]) -> str:
    """``read Secrets (rule: get,list on secrets (apiGroups "")); …``"""
    return "; ".join(f"{power.what} (rule: {describe_rule(rule)})" for power, rule in found)
