"""Property-based fuzzing of both review endpoints (hypothesis, derandomized so CI runs are repeatable).

Properties:
- whatever the body, ``/validate`` and ``/authorize`` answer 200 or a 4xx, never a 5xx;
- an agent's object with a wrong-typed value anywhere (a denied fixture object, mutated) is never
  allowed: the guard either still sees the violation or says the object is malformed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import fastapi.testclient
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reviews
from tests.unit import test_fixtures, test_malformed
from webhook import app, engine

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def client(shipped_engine: engine.Engine) -> Iterator[fastapi.testclient.TestClient]:
    state = app.State(shipped_engine)
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as test_client:
        yield test_client


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replace(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    root = copy.deepcopy(root)
    holder = root
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return root


def _envelopes() -> list[dict[str, Any]]:
    access = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": reviews.AGENT["username"],
            "groups": reviews.AGENT.get("groups", []),
            "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "default", "name": "x"},
        },
    }
    return [reviews.namespace_delete(), access]


@st.composite
def mutated_reviews(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid review of either endpoint with one subtree replaced by arbitrary JSON."""
    envelope = draw(st.sampled_from(_envelopes()))
    path = draw(st.sampled_from(list(_paths(envelope))))
    mutated = _replace(envelope, path, draw(json_values))
    endpoint = "/validate" if envelope.get("kind") == "AdmissionReview" else "/authorize"
    return endpoint, json.dumps(mutated).encode()


@FUZZ
@given(
    endpoint=st.sampled_from(["/validate", "/authorize"]),
    body=st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()),
)
def test_arbitrary_bodies_never_get_a_5xx(
    client: fastapi.testclient.TestClient, endpoint: str, body: bytes
) -> None:
    answer = client.post(endpoint, content=body)
    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert "error" in answer.json()


@FUZZ
@given(case=mutated_reviews())
def test_mutated_reviews_never_get_a_5xx(
    client: fastapi.testclient.TestClient, case: tuple[str, bytes]
) -> None:
    endpoint, body = case
    answer = client.post(endpoint, content=body)
    assert answer.status_code < 500, answer.text


DENY_FIXTURES = [test_fixtures._load(path) for path in test_malformed.DENY]  # with an object to mutate


@st.composite
def malformed_agent_objects(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A denied fixture whose object has one value replaced by JSON of another type."""
    data = draw(st.sampled_from(DENY_FIXTURES))
    field = "object" if isinstance(data["request"].get("object"), dict) else "oldObject"
    root = data["request"][field]
    path = draw(st.sampled_from([p for p in _paths(root) if p and p[0] not in ("kind", "apiVersion")]))
    original: Any = root
    for step in path:
        original = original[step]
    wrong = draw(json_values.filter(lambda value: type(value) is not type(original) and value is not None))
    mutated = copy.deepcopy(data)
    mutated["request"][field] = _replace(root, path, wrong)
    return mutated, f"{field}.{'.'.join(map(str, path))} = {wrong!r:.60}"


def _review_body(data: dict[str, Any]) -> bytes:
    """The AdmissionReview the apiserver would send for a fixture (as tests/unit/test_fixtures builds it)."""
    request = copy.deepcopy(data["request"])
    request.setdefault("uid", "fuzz")
    request["userInfo"] = data.get("user", reviews.AGENT)
    obj = request.get("object") or request.get("oldObject") or {}
    gvr = request.get("resource", {})
    kind = obj.get("kind", "") if isinstance(obj, dict) else ""
    request.setdefault(
        "kind", {"group": gvr.get("group", ""), "version": gvr.get("version", "v1"), "kind": kind}
    )
    return reviews.body(reviews.review(request))


@FUZZ
@given(case=malformed_agent_objects())
def test_a_malformed_agent_object_is_never_allowed(
    shipped_engine: engine.Engine, case: tuple[dict[str, Any], str]
) -> None:
    data, label = case
    judge = test_fixtures._engine_for(shipped_engine.policy.with_mode("enforce"), data)
    with fastapi.testclient.TestClient(
        app.create_app(app.State(judge), on_decision=lambda _: None)
    ) as client:
        answer = client.post("/validate", content=_review_body(data))
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        assert answer.json()["response"]["allowed"] is False, f"allowed after {label}"
