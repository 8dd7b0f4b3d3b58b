"""Memory bounds of one review: bytes (the body limit), parsed values, and bodies buffered at once."""

from __future__ import annotations

import asyncio
from typing import Any

import fastapi.testclient

from tests import reviews
from webhook import app, engine


def _update_with(items: list[Any]) -> bytes:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Blob",
        "metadata": {"name": "b"},
        "spec": {"items": items},
    }
    request = reviews.admission_request("UPDATE", "blobs", group="example.com", name="b", obj=obj, old=obj)
    return reviews.body(reviews.review(request))


def test_body_limit_is_derived_from_what_the_apiserver_can_send() -> None:
    assert app.DEFAULT_MAX_BODY == 2 * 3 * 1024 * 1024 + 1024 * 1024


def test_dense_small_values_are_refused_before_parsing(shipped_engine: engine.Engine) -> None:
    """Some 7 MB of `[{},{},...]` (some 300 MiB once parsed) is refused from its bytes alone."""
    state = app.State(shipped_engine)
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        dense = b'{"a":[' + b",".join([b"{}"] * 2_400_000) + b"]}"
        assert len(dense) < app.DEFAULT_MAX_BODY
        answer = client.post("/validate", content=dense)
        assert answer.status_code == 413
        assert f"more than the {app.MAX_JSON_VALUES} the guard parses" in answer.json()["error"]
        under = _update_with([{}] * (app.MAX_JSON_VALUES // 4 - 100))  # 2 per item, object and old
        assert app.json_values(under) <= app.MAX_JSON_VALUES
        assert client.post("/validate", content=under).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_value_count_is_an_upper_bound() -> None:
    body = b'{"a": [1, 2, {"b": "x,y"}], "c": []}' * 100_000  # brackets and commas in strings count too
    values = body.count(b",") + body.count(b"{") + body.count(b"[") + 1
    assert app.json_values(body) == values
    assert app.json_values(b"[1,2,3]") == 0  # bodies shorter than the limit are not counted at all


def test_bodies_buffered_at_once_stay_within_the_budget() -> None:
    """Beyond its first BODY_ALLOWANCE bytes, a body waits for room in the shared budget or gets 503."""
    budget = app.Budget(total=2 * app.BODY_ALLOWANCE)

    async def upload(size: int, chunks: int = 4) -> bytes | int:
        part = size // chunks
        messages = [
            {"type": "http.request", "body": b"x" * part, "more_body": i < chunks - 1} for i in range(chunks)
        ]

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0)  # let the other uploads interleave
            return messages.pop(0)

        try:
            return await app.read_body({"headers": []}, receive, 10 * app.BODY_ALLOWANCE, budget)
        except app.Problem as problem:
            return problem.status

    async def scenario() -> list[bytes | int]:
        return list(await asyncio.gather(*(upload(3 * app.BODY_ALLOWANCE) for _ in range(3))))

    results = asyncio.run(scenario())
    assert results.count(503) >= 1 and any(isinstance(r, bytes) for r in results)
    assert budget.used == 0  # every upload gave back what it took
    assert asyncio.run(upload(app.BODY_ALLOWANCE)) == b"x" * app.BODY_ALLOWANCE  # small ones never wait
