"""The contract every guard family implements.

A family is a module under ``webhook.guards`` that defines ``FAMILY``. Its checks are pure functions
that *return* (yield) finding messages and never decide modes, prefixes or logging: the engine adds
``[guard-id]``, applies the policy's mode and turns a crash into a fail-closed error finding. The
family's ``Settings`` model is the schema of its section in the policy YAML, so logic stays in code
and knobs stay in policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Generic, Literal, TypeVar

import pydantic
from pydantic import alias_generators

from webhook import attributes, budget

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


class GuardSettings(PolicyModel):
    """Base for a family's policy section."""

    mode: Mode | None = None

    @pydantic.field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as boolean false; an operator writing `mode: off` means "off".
        return "off" if value is False else value


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about the evaluation that are not part of the request itself."""

    is_agent: Callable[[attributes.UserInfo], bool]
    guard_namespace: str
    # The policy's ``podTemplates``: more (group, resource) -> pod spec paths, and the shape detector.
    pod_templates: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    detect_pod_templates: bool = False
    # State that outlives one request (destructive budgets) and the clock it is read against. The
    # server passes one ledger to every engine it builds, so a policy reload keeps the counts.
    ledger: budget.Ledger = field(default_factory=budget.Ledger)
    clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class AdmissionRule:
    """Which requests a family needs the apiserver to send (rendered into the webhook configuration)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    operations: tuple[str, ...]


S = TypeVar("S", bound=GuardSettings)

AdmissionCheck = Callable[[attributes.AdmissionRequest, S, Context], Iterable[str]]
AccessCheck = Callable[[attributes.AccessRequest, S, Context], Iterable[str]]
Settle = Callable[[attributes.AdmissionRequest, S, Context], None]


@dataclass(frozen=True)
class Family(Generic[S]):
    """One guard family: its stable id, settings schema and checks."""

    id: str
    summary: str
    settings: type[S]
    admission: AdmissionCheck[S] | None = None
    access: AccessCheck[S] | None = None
    rules: tuple[AdmissionRule, ...] = ()
    # Judges pod specs (``podspec``): the webhook then also routes every kind that carries one,
    # including the ones the policy's ``podTemplates`` adds.
    judges_pod_specs: bool = False
    # Called once an agent's admission request has been admitted (allowed, or denied only in
    # dry-run): the one place a family may record state, so refused requests never count.
    settle: Settle[S] | None = None
