"""Cost of one review inside the process: the ASGI app called directly, no network, no TLS.

Splits a review into its parts on the benchmark's request mix (envelope parse, engine, decision
line, whole app), so an optimisation can be judged without the noise of a load test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import mix
from tests import reviews
from webhook import app, decisionlog, engine, policy, review


def _per_call(function: Callable[[bytes], Any], bodies: list[bytes], calls: int) -> float:
    started = time.perf_counter()
    for index in range(calls):
        function(bodies[index % len(bodies)])
    return (time.perf_counter() - started) / calls * 1e6


def _asgi(guard_app: app.GuardApp, path: str, bodies: list[bytes], calls: int) -> float:
    async def one(body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop()

        async def send(_: Any) -> None:
            return None

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
        await guard_app(scope, receive, send)

    async def many() -> float:
        for body in bodies[:200]:  # warm-up
            await one(body)
        started = time.perf_counter()
        for index in range(calls):
            await one(bodies[index % len(bodies)])
        return (time.perf_counter() - started) / calls * 1e6

    return asyncio.run(many())


def run(calls: int = 20_000) -> dict[str, float]:
    judge = engine.Engine(policy.load(reviews.RULES))
    with Path("/dev/null").open("wb") as sink:
        writer = decisionlog.Writer(sink)
        guard_app = app.create_app(app.State(judge), on_decision=writer)
        admissions, accesses = mix.admission_bodies(), mix.access_bodies()
        parsed = [review.parse_admission(body) for body in admissions]
        verdicts = [judge.admit(request) for request in parsed]
        positions = iter(range(10**9))
        return {
            "parse AdmissionReview": _per_call(review.parse_admission, admissions, calls),
            "engine.admit": _per_call(
                lambda _: judge.admit(parsed[next(positions) % len(parsed)]), admissions, calls
            ),
            "decision entry + line": _per_call(
                lambda _: writer(
                    decisionlog.admission_entry(
                        parsed[0], verdicts[next(positions) % len(verdicts)], "enforce"
                    )
                ),
                admissions,
                calls,
            ),
            "app /validate (whole review)": _asgi(guard_app, "/validate", admissions, calls),
            "app /authorize (whole review)": _asgi(guard_app, "/authorize", accesses, calls),
        }


def main() -> int:
    for label, micros in run().items():
        print(f"[in-process] {label:<30} {micros:7.1f} us", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
