"""Engine-only micro-benchmark: reviews per second per guard family, no HTTP, no parsing.

Each family's own fixtures (deny and allow) are judged by an engine that has only that family
active, so the number is the cost of that family's checks plus the engine's bookkeeping.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import yaml

from tests import reviews
from webhook import attributes, engine, guards, policy, review


def _requests(guard_id: str) -> list[attributes.AdmissionRequest]:
    found = []
    for path in sorted((reviews.FIXTURES / guard_id).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "request" not in data or data.get("settings"):
            continue
        request: dict[str, Any] = dict(data["request"])
        request.setdefault("uid", str(uuid.uuid4()))
        request["userInfo"] = data.get("user", reviews.AGENT)
        request.setdefault("kind", {"group": "", "version": "v1", "kind": ""})
        found.append(review.parse_admission(reviews.body(reviews.review(request))))
    return found


def run(seconds_per_family: float = 1.5) -> dict[str, float]:
    base = policy.load(reviews.RULES).with_mode("enforce")
    rates: dict[str, float] = {}
    for family in guards.families():
        only = {
            guard_id: settings if guard_id == family.id else type(settings)(mode="off")
            for guard_id, settings in base.guards.items()
        }
        judge = engine.Engine(dataclasses.replace(base, guards=only, forced=False))
        requests = _requests(family.id)
        if not requests:
            continue
        count = 0
        deadline = time.perf_counter() + seconds_per_family
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            for request in requests:
                judge.admit(request)
            count += len(requests)
        rates[family.id] = count / (time.perf_counter() - start)
    return rates
