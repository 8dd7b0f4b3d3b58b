"""Objects a guard cannot read as they are: wrong JSON types and oversized lists are denied for agents.

Wrong JSON types never hide a violation: every wrong-type mutation of a denied object is denied.

For every admission deny fixture, each object, list and string inside ``object``/``oldObject`` is
replaced in turn by values of another JSON type (an object wrapped in a list, a list turned into an
object, either turned into a string, a string turned into a number). The apiserver never sends such
objects; a broken or hostile client on the network path might, and for an agent the rule is "fail
closed": the guard either still sees the violation or says the object is malformed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import reviews
from tests.unit import test_fixtures
from webhook import engine, policy, review, safe

Path_ = tuple[str | int, ...]


def _paths(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _wrong_types(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [[value], "x", 1]
    if isinstance(value, list):
        return [{str(i): item for i, item in enumerate(value)}, "x", value[0] if value else 1]
    if isinstance(value, str):
        return [1, [value], {value: value}]
    return []


def _set(root: Any, path: Path_, value: Any) -> None:
    for step in path[:-1]:
        root = root[step]
    root[path[-1]] = value


def mutations(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("object", "oldObject"):
        root = data.get("request", {}).get(field)
        if not isinstance(root, dict):
            continue
        for path, value in list(_paths(root)):
            if path in ((), ("kind",), ("apiVersion",)):  # the envelope names the kind, not the object
                continue
            for wrong in _wrong_types(value):
                mutated = copy.deepcopy(data)
                _set(mutated["request"][field], path, wrong)
                where = ".".join(str(p) for p in (field, *path))
                yield f"{where} = {wrong!r:.40}", mutated


def _mutable(data: dict[str, Any]) -> bool:
    """An admission fixture with an object to mutate, of a kind that is described: the shape detector
    (``podTemplates.detect``) looks into unknown kinds, where no type is wrong, only shapes match."""
    return next(mutations(data), None) is not None and not (data.get("podTemplates") or {}).get("detect")


DENY = [
    path for path in sorted(reviews.FIXTURES.glob("*/deny.*.yaml")) if _mutable(test_fixtures._load(path))
]


@pytest.mark.parametrize("path", DENY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_wrong_type_mutation_of_a_denied_object_is_allowed(
    path: Path, shipped_policy: policy.Policy
) -> None:
    data = test_fixtures._load(path)
    judge: engine.Engine = test_fixtures._engine_for(shipped_policy.with_mode("enforce"), data)
    user = data.get("user", reviews.AGENT)
    allowed, crashed, tried = [], [], 0
    for label, mutated in mutations(data):
        tried += 1
        verdict = test_fixtures._judge(judge, mutated, user)
        if verdict.allowed:
            allowed.append(label)
        elif any(f.error for f in verdict.findings):
            crashed.append(label)
    assert tried > 0
    assert allowed == [], f"{len(allowed)} of {tried} wrong-type mutations allowed: {allowed[:10]}"
    assert crashed == [], f"{len(crashed)} of {tried} mutations crashed a guard: {crashed[:10]}"


# --- bounded work per review (defect 9 of #13) ---------------------------------------------------


def _pod(containers: list[dict[str, Any]], **metadata: Any) -> dict[str, Any]:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", **metadata},
        "spec": {"containers": containers},
    }
    return reviews.admission_request("CREATE", "pods", obj=obj)


def _privileged(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"c{i}", "image": "alpine", "securityContext": {"privileged": True}} for i in range(count)
    ]


def _answer(judge: engine.Engine, request: dict[str, Any]) -> tuple[engine.Verdict, bytes]:
    parsed = review.parse_admission(reviews.body(reviews.review(request)))
    verdict = judge.admit(parsed)
    return verdict, orjson.dumps(review.admission_response(parsed.uid, verdict))


def test_a_list_longer_than_the_guards_review_is_refused_for_agents(shipped_engine: engine.Engine) -> None:
    verdict, answer = _answer(shipped_engine, _pod(_privileged(safe.MAX_ITEMS + 1)))
    assert not verdict.allowed
    assert (
        f"[privileged-workload] spec.containers has {safe.MAX_ITEMS + 1} items, more than the"
        in answer.decode()
    )
    assert len(answer) < 4096


def test_findings_per_guard_are_capped_so_answers_and_log_lines_stay_small(
    shipped_engine: engine.Engine,
) -> None:
    verdict, answer = _answer(shipped_engine, _pod(_privileged(safe.MAX_ITEMS)))
    mine = [f.message for f in verdict.findings if f.guard == "privileged-workload"]
    assert len(mine) == engine.MAX_FINDINGS + 1 and mine[-1].endswith(engine.MORE_FINDINGS)
    assert len(answer) < 32 * 1024  # a thousand findings would be some 200 KiB


def test_a_long_value_quoted_in_a_message_is_cut(shipped_engine: engine.Engine) -> None:
    huge = "x" * 100_000
    annotations = {"container.apparmor.security.beta.kubernetes.io/app": huge}
    verdict, answer = _answer(shipped_engine, _pod([{"name": "app", "image": "a"}], annotations=annotations))
    assert not verdict.allowed
    assert all(len(f.message) <= engine.MAX_MESSAGE + 40 for f in verdict.findings)
    assert len(answer) < 8 * 1024
