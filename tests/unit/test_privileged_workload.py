"""privileged-workload beyond the fixtures: every template location, level ordering, settings, rules."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tests import reviews
from webhook import engine, manifests, podspec, policy, review
from webhook.guards import privileged_workload

GUARD = "privileged-workload"
FIXTURES = reviews.FIXTURES / GUARD

BAD_POD_SPEC: dict[str, Any] = {
    "hostNetwork": True,
    "containers": [{"name": "shell", "image": "alpine", "securityContext": {"privileged": True}}],
}


def _engine(base: policy.Policy, **settings: Any) -> engine.Engine:
    guards = dict(base.guards)
    guards[GUARD] = privileged_workload.Settings.model_validate(settings)
    return engine.Engine(dataclasses.replace(base.with_mode("enforce"), guards=guards))


def _nest(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An object holding ``spec`` at ``path``; a ``[*]`` list holds it as its only item."""
    obj: Any = copy.deepcopy(spec)
    for key in reversed(podspec.parse_path(path)):
        obj = [obj] if key == podspec.EACH else {key: obj}
    nested: dict[str, Any] = obj
    return nested


def _admit(judge: engine.Engine, request: dict[str, Any]) -> engine.Verdict:
    return judge.admit(review.parse_admission(reviews.body(reviews.review(request))))


LOCATIONS = [
    pytest.param(group, resource, path, id=f"{group or 'core'}/{resource}:{path}")
    for (group, resource), paths in sorted(podspec.TEMPLATE_PATHS.items())
    for path in paths
]


@pytest.mark.parametrize(("group", "resource", "path"), LOCATIONS)
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_every_template_location_is_judged(
    group: str, resource: str, path: str, operation: str, shipped_policy: policy.Policy
) -> None:
    """The same bad pod spec, wherever a workload kind keeps it, is denied with the full field path."""
    obj = {"metadata": {"name": "x", "namespace": "ns"}, **_nest(path, BAD_POD_SPEC)}
    old = {"metadata": {"name": "x", "namespace": "ns"}} if operation == "UPDATE" else None
    request = reviews.admission_request(
        operation, resource, group=group, name="x", namespace="ns", obj=obj, old=old
    )
    verdict = _admit(_engine(shipped_policy), request)
    assert not verdict.allowed
    messages = [f.message for f in verdict.findings]
    shown = path.replace("[*]", "[0]")
    assert len(messages) == 2, messages
    assert any(f"{shown}.hostNetwork=true" in m for m in messages), messages
    assert any('container "shell" sets securityContext.privileged=true' in m for m in messages), messages


def test_apparmor_annotation_on_a_pod_names_metadata(shipped_policy: policy.Policy) -> None:
    key = "container.apparmor.security.beta.kubernetes.io/app"
    obj = {
        "metadata": {"name": "p", "annotations": {key: "unconfined"}},
        "spec": {"containers": [{"name": "app", "image": "alpine"}]},
    }
    verdict = _admit(_engine(shipped_policy), reviews.admission_request("CREATE", "pods", obj=obj))
    [finding] = verdict.findings
    assert f'the pod sets metadata.annotations["{key}"]=unconfined' in finding.message


def _deny_fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("deny.*.yaml"))


@pytest.mark.parametrize("path", _deny_fixtures(), ids=lambda p: p.stem)
def test_restricted_denies_whatever_baseline_denies(path: Path, shipped_policy: policy.Policy) -> None:
    """restricted is a superset of baseline: no deny fixture becomes allowed when tightening the level."""
    data = yaml.safe_load(path.read_text())
    request = copy.deepcopy(data["request"])
    request.update(uid="u-1", userInfo=reviews.AGENT)
    request.setdefault("kind", {"group": "", "version": "v1", "kind": "X"})
    templates = policy.PodTemplates.model_validate(data.get("podTemplates", {}))
    verdict = _admit(
        _engine(dataclasses.replace(shipped_policy, pod_templates=templates), level="restricted"), request
    )
    assert not verdict.allowed
    assert len(verdict.findings) >= data["expect"].get("findings", 1)


def test_restricted_compliant_pod_passes_baseline_too(shipped_policy: policy.Policy) -> None:
    data = yaml.safe_load((FIXTURES / "allow.restricted-pod.yaml").read_text())
    request = {**data["request"], "uid": "u-2", "userInfo": reviews.AGENT}
    request["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    assert _admit(_engine(shipped_policy), request).findings == ()


def test_explicit_bad_values_at_restricted(shipped_policy: policy.Policy) -> None:
    """Explicit false/0/true values are named as such (not as 'unset')."""
    obj = {
        "metadata": {"name": "p"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": False,
                "runAsUser": 0,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "app",
                    "image": "alpine",
                    "securityContext": {
                        "allowPrivilegeEscalation": True,
                        "runAsNonRoot": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    verdict = _admit(
        _engine(shipped_policy, level="restricted"), reviews.admission_request("CREATE", "pods", obj=obj)
    )
    messages = "\n".join(f.message for f in verdict.findings)
    assert 'container "app" sets securityContext.allowPrivilegeEscalation=true' in messages
    assert 'container "app" sets securityContext.runAsNonRoot=false' in messages
    assert "the pod sets spec.securityContext.runAsNonRoot=false" in messages
    assert "the pod sets spec.securityContext.runAsUser=0" in messages
    assert len(verdict.findings) == 4, messages


def test_malformed_pod_spec_is_a_malformed_finding_not_a_crash(shipped_policy: policy.Policy) -> None:
    """Shapes the apiserver would never send are denied as malformed, naming the field; never a crash."""
    obj = {
        "metadata": {"name": "p", "annotations": "nope"},
        "spec": {
            "securityContext": [],
            "containers": ["x", {"name": "a", "securityContext": "weird", "ports": [None]}],
            "volumes": ["x", {"name": "odd"}],
        },
    }
    verdict = _admit(
        _engine(shipped_policy, level="restricted"), reviews.admission_request("CREATE", "pods", obj=obj)
    )
    assert not any(f.error for f in verdict.findings) and not verdict.allowed
    messages = "\n".join(f.message for f in verdict.findings)
    assert messages.startswith("[privileged-workload] malformed object: spec.securityContext is a list where")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (["ALL"], "every capability"),
        (["CAP_SYS_ADMIN"], "no CAP_"),
        (["net_admin"], "not a capability name"),
    ],
)
def test_allowed_capabilities_are_validated(value: list[str], problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=problem):
        privileged_workload.Settings.model_validate({"allowedCapabilities": value})


def test_unknown_level_is_a_policy_error_naming_the_field(tmp_path: Path) -> None:
    text = (reviews.RULES / "policy.yaml").read_text().replace("level: baseline", "level: strict")
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(policy.PolicyError, match=r"guards\.privileged-workload\.level: Input should be"):
        policy.load(tmp_path)


def test_rules_cover_every_pod_spec_location(shipped_policy: policy.Policy) -> None:
    covered = {
        (group, resource, operation)
        for rule in manifests.admission_rules(shipped_policy)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }
    expected = {(g, r) for g, r in podspec.TEMPLATE_PATHS} | {("", "pods/ephemeralcontainers")}
    assert {(g, r, op) for g, r in expected for op in ("CREATE", "UPDATE")} <= covered
