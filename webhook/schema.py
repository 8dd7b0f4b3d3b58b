"""The policy YAML's base model and shared field types, for every section of ``rules/*.yaml``.

``webhook.policy`` (the document, agents), ``webhook.exemptions`` and each guard family's
``Settings`` (``webhook.guards.base.GuardSettings``) are read the same way: camelCase keys,
unknown keys are errors (a typo must not silently disable a setting), values immutable.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import alias_generators

Mode = Literal["enforce", "dry-run", "off"]


class PolicyModel(pydantic.BaseModel):
    """How every part of the policy YAML is read: camelCase keys, unknown keys are errors, immutable."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
    )


def _names_per_namespace(value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    for namespace, names in value.items():
        if not namespace or any(not name for name in names):
            raise ValueError("namespaces and names must be non-empty strings")
    return value


# An allow-list of object names per namespace ("*" as a name: every one), as guards take them.
NamesPerNamespace = Annotated[dict[str, tuple[str, ...]], pydantic.AfterValidator(_names_per_namespace)]
