"""``delete-budget``: at most ``limit`` destructive requests per agent identity per ``window``.

Every single DELETE an agent makes may be fine on its own, and still an agent told to "clean up" can
empty a namespace object by object (``deletecollection`` arrives here as one DELETE per object). A
budget caps the damage of one runaway loop or injected prompt between two human looks.

Destructive means: a DELETE of any resource, and an update that scales a workload (Deployment,
StatefulSet, ReplicaSet, ReplicationController, or any ``scale`` subresource) from a positive replica
count to zero. A server-side dry run is judged like the real request (refused when the budget is
spent, so the agent learns nothing new) but never charged: it destroys nothing.

The check only *reads* the ledger; ``settle`` charges a request after the engine has admitted it, so
attempts the guard (or any other guard) refused never spend budget. Counting semantics (sliding window,
per guard process) are in ``webhook.budget`` and docs/budgets.md.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import pydantic

from webhook import attributes, budget, safe, schema
from webhook.guards import base

SCALABLE = frozenset({"deployments", "statefulsets", "replicasets", "replicationcontrollers"})

Duration = Annotated[float, pydantic.BeforeValidator(budget.parse_duration)]


class Budget(schema.PolicyModel):
    """A namespace's own budget; unset fields take the guard's values."""

    limit: int | None = pydantic.Field(default=None, ge=0)
    window: Duration | None = None


class Settings(base.GuardSettings):
    """``limit`` destructive requests per ``window`` per agent identity.

    ``perNamespace``: count each namespace separately (cluster-scoped objects form one more bucket).
    ``namespaces``: a namespace listed here always has a bucket of its own with these values
    (``limit: 0`` forbids agents every destructive request there).
    """

    limit: int = pydantic.Field(default=20, ge=0)
    window: Duration = 600.0
    per_namespace: bool = False
    scale_to_zero: bool = True
    namespaces: dict[str, Budget] = pydantic.Field(default_factory=dict)

    def bucket(self, namespace: str) -> tuple[str, int, float]:
        """``(bucket namespace, limit, window)`` for a request in ``namespace`` ("": cluster scope)."""
        own = self.namespaces.get(namespace) if namespace else None
        if own is not None:
            limit = own.limit if own.limit is not None else self.limit
            return namespace, limit, own.window if own.window is not None else self.window
        return (namespace if self.per_namespace else "*"), self.limit, self.window


def _replicas(obj: Mapping[str, Any] | None) -> int | None:
    """``spec.replicas`` of a workload or Scale object; Kubernetes defaults a missing value to 1."""
    if not isinstance(obj, Mapping):
        return None
    spec = safe.mapping(obj.get("spec"), "spec")  # a wrong type is malformed, not "no replicas"
    value = spec.get("replicas", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def destructive(request: attributes.AdmissionRequest, settings: Settings) -> str | None:
    """What makes the request destructive ("delete", "scale to zero"), or None."""
    if request.operation == "DELETE":
        return "delete"
    if request.operation != "UPDATE" or not settings.scale_to_zero:
        return None
    resource = request.resource.resource
    if request.sub_resource == "scale" or (resource in SCALABLE and not request.sub_resource):
        new, old = _replicas(request.object), _replicas(request.old_object)
        if new == 0 and old is not None and old > 0:
            return "scale to zero"
    return None


def _what(request: attributes.AdmissionRequest, action: str) -> str:
    where = f"{request.namespace}/{request.name}" if request.namespace else request.name
    return f'{action} of {request.resource_path} "{where}"'


def _clock(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%H:%M:%S UTC")


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    action = destructive(request, settings)
    if action is None:
        return
    namespace, limit, window = settings.bucket(request.namespace)
    who = request.user.username
    scope = ""
    if namespace != "*":
        scope = f' in namespace "{namespace}"' if namespace else " on cluster-scoped objects"
    if limit == 0:
        yield (
            f"agents may make no destructive requests (deletes, scaling to zero){scope}, so this "
            f"{_what(request, action)} is refused; do not try another way to remove or stop it (other "
            "identities, deleting the namespace or scaling to zero are refused or count the same): "
            "tell the user what should be removed and let a human operator do it"
        )
        return
    now = ctx.clock()
    spent = ctx.ledger.spent((who, namespace), request.uid, window, now)
    if spent.charged or spent.count < limit or spent.oldest is None or spent.newest is None:
        return
    per = budget.format_duration(window)
    one_more, full = spent.oldest + window, spent.newest + window
    yield (
        f"{who} has already made {spent.count} destructive requests (deletes, scaling to zero){scope} "
        f"in the last {per}, the limit for an agent is {limit} per {per}; this {_what(request, action)} "
        f"is refused. The budget refills by one at {_clock(one_more)} (in "
        f"{budget.format_duration(one_more - now)}) and fully at {_clock(full)}. Do not retry in a loop "
        "and do not work around the limit (other identities, deleting the namespace or a whole "
        "collection, scaling to zero are refused or count the same): tell the user which objects are "
        "still to be removed and let them confirm or do it themselves, or wait until the budget refills"
    )


def settle(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> None:
    """Charge an admitted destructive request to its bucket (a dry run destroys nothing: never)."""
    if request.dry_run or destructive(request, settings) is None:
        return
    namespace, limit, window = settings.bucket(request.namespace)
    ctx.ledger.charge((request.user.username, namespace), request.uid, limit, window, ctx.clock())


FAMILY = base.Family(
    id="delete-budget",
    summary="Caps each agent identity's destructive requests (deletes, scale to zero) per time window.",
    settings=Settings,
    admission=check,
    settle=settle,
    rules=(
        base.AdmissionRule(api_groups=("*",), resources=("*/*",), operations=("DELETE",)),
        base.AdmissionRule(
            api_groups=("*",), resources=(*sorted(SCALABLE), "*/scale"), operations=("UPDATE",)
        ),
    ),
)
