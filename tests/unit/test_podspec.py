"""Where pod specs sit: the path syntax, the policy's ``podTemplates``, the shape detector, the rules
rendered for them, and what an UPDATE may change without being judged again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests import reviews
from webhook import engine, manifests, podspec, policy, review

HEADER = "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents: {serviceAccounts: ['mcp-system/*']}\n"
PRIVILEGED = {"containers": [{"name": "x", "image": "alpine", "securityContext": {"privileged": True}}]}


def _rules(loaded: policy.Policy) -> set[tuple[str, str, str]]:
    return {
        (group, resource, operation)
        for rule in manifests.admission_rules(loaded)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }


def _without_tamper(loaded: policy.Policy) -> policy.Policy:
    """guard-tamper routes every resource (``*/*``); without it the pod-spec rules stand alone."""
    guards = dict(loaded.guards)
    guards["guard-tamper"] = guards["guard-tamper"].model_copy(update={"mode": "off"})
    return dataclasses.replace(loaded, guards=guards)


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("spec", ("spec",)),
        ("spec.template.spec", ("spec", "template", "spec")),
        ("spec.templates[*].containerSet", ("spec", "templates", "[*]", "containerSet")),
    ],
)
def test_path_syntax(path: str, keys: tuple[str, ...]) -> None:
    assert podspec.parse_path(path) == keys


@pytest.mark.parametrize("path", ["", "spec..x", "spec[0]", "spec.*", "spec.a b", ".spec"])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="segments are field names"):
        podspec.parse_path(path)


def test_bad_policy_path_names_file_and_field(tmp_path: Path) -> None:
    text = HEADER + "podTemplates:\n  kinds: [{group: x.io, resource: things, paths: ['spec.items[0]']}]\n"
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(policy.PolicyError, match=r"policy.yaml: podTemplates\.kinds\.0\.paths: "):
        policy.load(tmp_path)


def test_shipped_rules_route_every_table_kind_without_guard_tamper(shipped_policy: policy.Policy) -> None:
    covered = _rules(_without_tamper(shipped_policy))
    for group, resource in podspec.TEMPLATE_PATHS:
        assert {(group, resource, "CREATE"), (group, resource, "UPDATE")} <= covered, (group, resource)
    assert ("", "pods/ephemeralcontainers", "UPDATE") in covered
    assert ("ml.example.com", "trainingjobs", "CREATE") not in covered


def test_policy_kinds_are_judged_and_routed(tmp_path: Path) -> None:
    text = HEADER + (
        "podTemplates:\n  kinds:\n"
        "    - {group: ml.example.com, resource: trainingjobs, paths: ['spec.workers[*].template.spec']}\n"
    )
    (tmp_path / "policy.yaml").write_text(text)
    loaded = _without_tamper(policy.load(tmp_path))
    assert ("ml.example.com", "trainingjobs", "CREATE") in _rules(loaded)
    assert ("*", "*", "CREATE") not in _rules(loaded)
    second = {**PRIVILEGED, "hostPID": True}
    obj = {"spec": {"workers": [{"template": {"spec": {}}}, {"template": {"spec": second}}]}}
    request = reviews.admission_request(
        "CREATE", "trainingjobs", group="ml.example.com", namespace="ml", obj=obj
    )
    verdict = engine.Engine(loaded).admit(review.parse_admission(reviews.body(reviews.review(request))))
    assert verdict.guards == ("privileged-workload",), verdict.findings
    messages = "\n".join(f.message for f in verdict.findings)
    assert "spec.workers[1].template.spec.hostPID=true" in messages, messages
    assert 'container "x" sets securityContext.privileged=true' in messages, messages


def test_detector_routes_everything_and_judges_by_shape(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(HEADER + "podTemplates: {detect: true}\n")
    loaded = _without_tamper(policy.load(tmp_path))
    assert ("*", "*", "CREATE") in _rules(loaded)
    assert ("", "pods/ephemeralcontainers", "UPDATE") in _rules(loaded)
    judge = engine.Engine(loaded)

    def fired(obj: dict[str, Any]) -> tuple[str, ...]:
        request = reviews.admission_request("CREATE", "things", group="x.io", namespace="n", obj=obj)
        return judge.admit(review.parse_admission(reviews.body(reviews.review(request)))).guards

    assert fired({"spec": {"jobTemplate": {"spec": {"template": {"spec": PRIVILEGED}}}}}) == (
        "privileged-workload",
    )
    assert fired({"spec": PRIVILEGED}) == ("privileged-workload",)
    # a "template" without a containers list is not a pod spec (e.g. a Helm release's values)
    assert fired({"spec": {"template": {"spec": {"hostNetwork": True}}}}) == ()


@pytest.mark.parametrize(
    ("change", "only_resources"),
    [
        ({"resources": {"limits": {"memory": "2Gi"}}}, True),
        ({"resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]}, True),
        ({"image": "other"}, False),
        ({"command": ["sh"]}, False),
        ({"env": [{"name": "A", "value": "b"}]}, False),
    ],
)
def test_only_resources_changed(change: dict[str, Any], only_resources: bool) -> None:
    old = {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "1Gi"}}}]}
    new = {"containers": [{**old["containers"][0], **change}]}
    raw = reviews.admission_request("UPDATE", "pods", namespace="n", obj={"spec": new}, old={"spec": old})
    request = review.parse_admission(reviews.body(reviews.review(raw)))
    pod = podspec.PodSpec("spec", new, ("spec",))
    assert podspec.only_resources_changed(request, pod) is only_resources
