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
from typing import Generic, Protocol, TypeVar

import pydantic

from webhook import attributes, budget, rbac, schema

# The policy YAML's vocabulary (``webhook.schema``), named here for the families' settings.
Mode = schema.Mode
NamesPerNamespace = schema.NamesPerNamespace


class GuardSettings(schema.PolicyModel):
    """Base for a family's policy section."""

    mode: Mode | None = None

    @pydantic.field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as boolean false; an operator writing `mode: off` means "off".
        return "off" if value is False else value


class RbacView(Protocol):
    """The cluster's RBAC as the guard last saw it (``webhook.rbaccache`` feeds it from a watch).

    ``snapshot()`` is None until the first complete read: guards that need it then refuse agents'
    requests with a reason to retry, rather than judging against an empty cluster.
    """

    def snapshot(self) -> rbac.Snapshot | None: ...


@dataclass(frozen=True, slots=True)
class StaticRbac:
    """A fixed view (tests, offline tools): ``None`` plays a source that has not synced yet."""

    current: rbac.Snapshot | None

    def snapshot(self) -> rbac.Snapshot | None:
        return self.current


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about the evaluation that are not part of the request itself.

    ``rbac`` is None when the guard has no RBAC source (``make run``, ``check``, ``replay``): guards
    then judge RBAC objects and pod specs by names alone, as documented in docs/rbac.md.
    """

    is_agent: Callable[[attributes.UserInfo], bool]
    guard_namespace: str
    # The policy's ``podTemplates``: more (group, resource) -> pod spec paths, and the shape detector.
    pod_templates: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    detect_pod_templates: bool = False
    # State that outlives one request (destructive budgets) and the clock it is read against. The
    # server passes one ledger to every engine it builds, so a policy reload keeps the counts.
    ledger: budget.Ledger = field(default_factory=budget.Ledger)
    clock: Callable[[], float] = time.time
    rbac: RbacView | None = None


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
