"""A test-only guard family, ``probe``, that reports every request it is shown.

The tools (check, replay) and exemptions must work for every family, but this branch ships only
``namespace-delete``, which never looks at reads, CONNECTs or namespaced objects. ``probe`` stands
in for the other families: its findings spell out exactly which request the engine built, so tests
can assert on what ``replay`` turned an audit event into. It only fires for objects in namespaces
whose name starts with ``probe-`` (or, for requests without a namespace, names starting with
``probe-``), so it stays out of the way of the real guards; tests that assert on exactly what it
saw use ``only_probe_rules`` so that no real family adds findings of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from webhook import attributes, guards
from webhook.guards import base

ID = "probe"


class Settings(base.GuardSettings):
    """Only ``mode``."""


def _probed(namespace: str, name: str) -> bool:
    return namespace.startswith("probe-") or (not namespace and name.startswith("probe-"))


def admission(request: attributes.AdmissionRequest, _: Settings, __: base.Context) -> Iterator[str]:
    if not _probed(request.namespace, request.name):
        return
    target = request.target or {}
    detail = ""
    if request.operation == "CONNECT" and isinstance(request.object, dict):
        detail = f" command={request.object.get('command')} container={request.object.get('container')}"
    yield (
        f"saw {request.operation} {request.resource_path} {request.namespace}/{request.name} "
        f"kind={request.kind} object-kind={target.get('kind')}{detail}"
    )


def access(request: attributes.AccessRequest, _: Settings, __: base.Context) -> Iterator[str]:
    if _probed(request.namespace, request.name):
        yield f"saw {request.verb} {request.group}/{request.resource_path} {request.namespace}/{request.name}"


FAMILY = base.Family(id=ID, summary="test probe", settings=Settings, admission=admission, access=access)


def only_probe_rules(directory: Path) -> Path:
    """A policy folder with the shipped agents and every real family off, so only ``probe`` reports."""
    directory.mkdir(parents=True, exist_ok=True)
    real = "".join(f'  {family.id}: {{mode: "off"}}\n' for family in guards.families() if family.id != ID)
    (directory / "policy.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
        "agents:\n  serviceAccounts: ['mcp-system/*']\n  groups: ['agent-guard.io:agents']\n"
        f"guards:\n{real}"
    )
    return directory


def registry() -> guards.Registry:
    """The shipped families plus ``probe``: pass it to ``policy.load`` or ``cli.main``."""
    return guards.discover().with_families(FAMILY)
