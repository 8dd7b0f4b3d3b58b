"""``namespace-delete``: an agent may never delete a Namespace, by the front door or the back.

Deleting a namespace cascades to every object in it (workloads, Secrets, PVC-backed data), which makes
it the highest-impact single call an injected prompt can make through a generic "delete" tool.

The back doors are judged here too, where an operator would look for them:

- ``namespaces/finalize``: stripping ``spec.finalizers`` of a terminating namespace makes the
  apiserver drop it before its content is cleaned up (and leaves orphans behind);
- ``metadata.ownerReferences`` on a Namespace (through the object, ``namespaces/status`` or
  ``namespaces/finalize``; merge patch, JSON patch and server-side apply all reach admission as the
  whole new object): the garbage collector deletes a namespace whose owner is gone, or is deleted by
  the agent next.

The authorizer denies what its attributes alone decide (``delete``/``deletecollection`` on
namespaces, ``update``/``patch`` on ``namespaces/finalize``), so ``kubectl auth can-i delete
namespaces`` says "no" to the agent, as admission would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from webhook import attributes, safe
from webhook.guards import base

DELETE_VERBS = frozenset({"delete", "deletecollection"})
FINALIZE_VERBS = frozenset({"update", "patch"})
# Not "delete what you created instead": an agent reads that as "empty the namespace object by object".
INSTEAD = (
    "do not empty it object by object instead: leave it as it is and ask a human operator to remove it "
    "(one object you created yourself may still be deleted by name)"
)


class Settings(base.GuardSettings):
    """Only ``mode``: there is no safe namespace for an agent to delete."""


def _owners(obj: attributes.Object | None) -> list[Any]:
    metadata = safe.mapping(obj.get("metadata") if obj is not None else None, "metadata")
    return [owner for _, owner in safe.mappings(metadata.get("ownerReferences"), "metadata.ownerReferences")]


def _owner_name(owner: Any) -> str:
    if not isinstance(owner, Mapping):
        return "?"
    return f'{owner.get("kind", "?")} "{owner.get("name", "?")}"'


def _name(request: attributes.AdmissionRequest) -> str:
    metadata = safe.mapping((request.object or {}).get("metadata"), "metadata")
    return request.name or safe.text(metadata.get("name"), "metadata.name")


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    resource = request.resource
    if resource.group != "" or resource.resource != "namespaces":
        return
    name = _name(request)
    if request.operation == "DELETE" and not request.sub_resource:
        yield (
            f'deleting namespace "{name}" is not allowed for agents because it destroys every '
            f"object inside it; {INSTEAD}"
        )
        return
    if request.operation not in ("CREATE", "UPDATE"):
        return
    if request.sub_resource == "finalize":
        yield (
            f'changing the finalizers of namespace "{name}" (UPDATE namespaces/finalize) is not allowed for '
            "agents: removing them lets the apiserver drop a terminating namespace before its content "
            f"is cleaned up; wait for the deletion to finish, or ask a human operator"
        )
    old = _owners(request.old_object)
    added = [owner for owner in _owners(request.object) if owner not in old]
    if added:
        owners = ", ".join(_owner_name(owner) for owner in added)
        yield (
            f'adding metadata.ownerReferences ({owners}) to namespace "{name}" is not allowed for agents: '
            "the garbage collector deletes a namespace, and everything in it, once its owner is gone; "
            f"label the namespace instead of giving it an owner, or ask a human operator"
        )


def access(request: attributes.AccessRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if not request.is_resource_request or request.group not in ("", "*"):
        return
    if request.resource not in ("namespaces", "*"):
        return
    verb = request.verb.lower()
    target = f'namespace "{request.name}"' if request.name else "namespaces"
    if verb in DELETE_VERBS and not request.sub_resource:
        yield (
            f'"{verb}" on {target} is not allowed for agents because it destroys every object inside; '
            f"{INSTEAD}"
        )
    elif verb in FINALIZE_VERBS and request.sub_resource == "finalize":
        yield (
            f'"{verb}" on namespaces/finalize ({target}) is not allowed for agents: removing the finalizers '
            "lets the apiserver drop a terminating namespace before its content is cleaned up; "
            "wait for the deletion to finish, or ask a human operator"
        )


FAMILY = base.Family(
    id="namespace-delete",
    summary=(
        "Denies an agent's DELETE of any Namespace (and so of everything in it), its finalizers and "
        "ownerReferences on Namespaces (the garbage collector's back door)."
    ),
    settings=Settings,
    admission=check,
    access=access,
    rules=(
        base.AdmissionRule(api_groups=("",), resources=("namespaces",), operations=("DELETE",)),
        base.AdmissionRule(
            api_groups=("",),
            resources=("namespaces", "namespaces/finalize", "namespaces/status"),
            operations=("CREATE", "UPDATE"),
        ),
    ),
)
