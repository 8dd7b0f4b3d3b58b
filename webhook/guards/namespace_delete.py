"""``namespace-delete``: an agent may never delete a Namespace.

Deleting a namespace cascades to every object in it (workloads, Secrets, PVC-backed data), which makes
it the highest-impact single call an injected prompt can make through a generic "delete" tool.
"""

from __future__ import annotations

from collections.abc import Iterator

from webhook import attributes
from webhook.guards import base


class Settings(base.GuardSettings):
    """Only ``mode``: there is no safe namespace for an agent to delete."""


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    resource = request.resource
    if (
        request.operation == "DELETE"
        and resource.group == ""
        and resource.resource == "namespaces"
        and not request.sub_resource
    ):
        yield (
            f'deleting namespace "{request.name}" is not allowed for agents because it destroys every '
            "object inside it; delete the specific resources you created instead, or ask a human operator"
        )


FAMILY = base.Family(
    id="namespace-delete",
    summary="Denies an agent's DELETE of any Namespace (and so of everything in it).",
    settings=Settings,
    admission=check,
    rules=(base.AdmissionRule(api_groups=("",), resources=("namespaces",), operations=("DELETE",)),),
)
