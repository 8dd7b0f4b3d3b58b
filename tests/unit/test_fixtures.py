"""Guard fixtures: ``tests/fixtures/<guard-id>/{deny,allow}.*.yaml``, discovered automatically.

A fixture holds ``request`` (an AdmissionReview.request, camelCase, as the apiserver sends it) or
``access`` (a SubjectAccessReview spec), an optional ``user`` (default: the agent
``mcp-system/mcp-k8s-go``), optional ``settings`` per guard id, an optional ``podTemplates`` (the
policy section of that name), and ``expect``:

- ``guards``: exactly the guard ids that must fire (deny fixtures; allow fixtures must fire none);
- ``messages``: substrings each of which must appear in some finding (e.g. the offending field);
- ``findings``: optionally, how many findings in total.

An optional ``rbac`` gives the guard an RBAC view (``agent-guard serve --rbac-source``): a list of
Roles, ClusterRoles and bindings (as ``kubectl get -o yaml`` shows them) the guards judge effective
permissions against, or ``not-synced`` for a source not read yet. Without it the guards judge by
names, as with no source.

Requests go through the real envelope parser, and every deny fixture is replayed as a human admin and
as a controller ServiceAccount, which must both be allowed untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from webhook import attributes, engine, guards, policy, rbac, review
from webhook.guards import base as guard_base

MIN_DENY, MIN_ALLOW = 8, 4


def _fixture_files() -> list[Path]:
    return sorted(reviews.FIXTURES.glob("*/*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: a fixture is a mapping"
    assert ("request" in data) != ("access" in data), f"{path}: needs exactly one of request/access"
    return data


def _rbac_view(data: dict[str, Any]) -> guard_base.RbacView | None:
    if "rbac" not in data:
        return None
    objects = data["rbac"]
    if objects == "not-synced":
        return guard_base.StaticRbac(None)
    assert isinstance(objects, list), "rbac: a list of RBAC objects, or not-synced"
    return guard_base.StaticRbac(rbac.Snapshot.from_objects(objects))


def _engine_for(base: policy.Policy, data: dict[str, Any]) -> engine.Engine:
    overrides = data.get("settings")
    pod_templates = data.get("podTemplates")
    view = _rbac_view(data)
    if pod_templates is not None:
        base = dataclasses.replace(base, pod_templates=policy.PodTemplates.model_validate(pod_templates))
    if not overrides:
        return engine.Engine(base, rbac=view)
    families = guards.by_id()
    merged = dict(base.guards)
    for guard_id, settings in overrides.items():
        merged[guard_id] = families[guard_id].settings.model_validate(settings)
    return engine.Engine(dataclasses.replace(base, guards=merged), rbac=view)


def _judge(judge: engine.Engine, data: dict[str, Any], user: dict[str, Any]) -> engine.Verdict:
    if "request" in data:
        request = copy.deepcopy(data["request"])
        request.setdefault("uid", str(uuid.uuid4()))
        request["userInfo"] = user
        obj = request.get("object") or request.get("oldObject") or {}
        gvr = request.get("resource", {})
        request.setdefault(
            "kind",
            {"group": gvr.get("group", ""), "version": gvr.get("version", "v1"), "kind": obj.get("kind", "")},
        )
        return judge.admit(review.parse_admission(reviews.body(reviews.review(request))))
    spec = dict(data["access"])
    access = attributes.AccessRequest(
        user=attributes.UserInfo(
            username=user["username"], groups=tuple(user.get("groups", ())), extra=user.get("extra", {})
        ),
        **{k: v for k, v in spec.items() if k != "user"},
    )
    return judge.authorize(access)


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path, shipped_policy: policy.Policy) -> None:
    data = _load(path)
    judge = _engine_for(shipped_policy.with_mode("enforce"), data)
    expect = data.get("expect", {})
    verdict = _judge(judge, data, data.get("user", reviews.AGENT))
    fired = set(verdict.guards)
    messages = [f.message for f in verdict.findings]

    assert not any(f.error for f in verdict.findings), f"a guard crashed: {messages}"
    if path.name.startswith("deny."):
        assert path.parent.name in expect.get("guards", []), (
            f"{path}: a deny fixture must expect its own guard"
        )
        assert fired == set(expect["guards"]), messages
        assert not verdict.allowed
        for message in messages:
            guard_id = message[1 : message.index("]")]
            assert message.startswith(f"[{guard_id}] "), message
    else:
        assert path.name.startswith("allow."), f"{path}: fixture names start with deny. or allow."
        assert fired == set(), messages
        assert verdict.allowed
    for needle in expect.get("messages", []):
        assert any(needle in m for m in messages), f"{needle!r} not in {messages}"
    if "findings" in expect:
        assert len(verdict.findings) == expect["findings"], messages


@pytest.mark.parametrize(
    "path",
    [p for p in _fixture_files() if p.name.startswith("deny.")],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
@pytest.mark.parametrize("who", [reviews.ADMIN, reviews.CONTROLLER], ids=["admin", "controller"])
def test_deny_fixture_is_allowed_for_non_agents(
    path: Path, who: dict[str, Any], shipped_policy: policy.Policy
) -> None:
    data = _load(path)
    judge = _engine_for(shipped_policy.with_mode("enforce"), data)
    verdict = _judge(judge, data, who)
    assert verdict.allowed and not verdict.agent and not verdict.findings


@pytest.mark.parametrize("family", guards.families(), ids=lambda f: f.id)
def test_every_guard_has_enough_fixtures(family: Any) -> None:
    folder = reviews.FIXTURES / family.id
    deny = list(folder.glob("deny.*.yaml"))
    allow = list(folder.glob("allow.*.yaml"))
    assert len(deny) >= MIN_DENY, f"{folder}: {len(deny)} deny fixtures, want at least {MIN_DENY}"
    assert len(allow) >= MIN_ALLOW, f"{folder}: {len(allow)} allow fixtures, want at least {MIN_ALLOW}"


def test_fixture_folders_name_real_guards() -> None:
    known = {f.id for f in guards.families()}
    folders = {p.name for p in reviews.FIXTURES.iterdir() if p.is_dir()}
    assert folders <= known, f"fixture folders without a guard: {folders - known}"
