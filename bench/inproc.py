"""Cost of one review inside the process: the ASGI app called directly, no network, no TLS.

Splits a review into its parts on the benchmark's request mix (envelope parse, engine, decision
line, whole app), so an optimisation can be judged without the noise of a load test.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

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


def _judged() -> tuple[engine.Engine, list[bytes], list[Any], list[engine.Verdict]]:
    """The shipped policy's engine, the admission mix, each review parsed and its verdict."""
    judge = engine.Engine(policy.load(reviews.RULES))
    admissions = mix.admission_bodies()
    parsed = [review.parse_admission(body) for body in admissions]
    return judge, admissions, parsed, [judge.admit(request) for request in parsed]


def run(calls: int = 20_000) -> dict[str, float]:
    judge, admissions, parsed, verdicts = _judged()
    with Path("/dev/null").open("wb") as sink:
        writer = decisionlog.Writer(sink)
        guard_app = app.create_app(app.State(judge), on_decision=writer)
        accesses = mix.access_bodies()
        positions = iter(range(10**9))
        measured = {
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
        writer.close()  # its thread writes the last lines before the sink closes
        return measured


def after_idle(calls: int = 200, gap: float = 0.010) -> dict[str, dict[str, float]]:
    """The same parts hot (back to back) and after ``gap`` seconds idle, in CPU time, median.

    At the apiserver the guard sleeps between reviews (one agent request at a time), and its first
    microseconds after a sleep run on cold caches and branch predictors: on this machine the same
    work costs several times its back-to-back CPU time (BENCHMARKS.md). That multiplier, not the
    back-to-back cost, is what a review adds to an agent's request, so both are reported.
    """
    judge, admissions, parsed, verdicts = _judged()
    parts: dict[str, Callable[[int], Any]] = {
        "parse AdmissionReview": lambda i: review.parse_admission(admissions[i]),
        "engine.admit": lambda i: judge.admit(parsed[i]),
        "answer (built and dumped)": lambda i: orjson.dumps(
            review.admission_response(parsed[i].uid, verdicts[i])
        ),
        "no-op call (the clock itself)": lambda i: None,
    }

    def median_cpu(part: Callable[[int], Any], pause: float) -> float:
        spent = []
        for call in range(calls):
            if pause:
                time.sleep(pause)
            index = call % len(admissions)
            started = time.thread_time_ns()
            part(index)
            spent.append((time.thread_time_ns() - started) / 1000)
        return statistics.median(spent)

    return {
        label: {"hot": median_cpu(part, 0), "after_idle": median_cpu(part, gap)}
        for label, part in parts.items()
    }


def print_after_idle(results: dict[str, dict[str, float]]) -> None:
    for label, item in results.items():
        times = item["after_idle"] / max(item["hot"], 0.001)
        print(
            f"[after idle] {label:<30} {item['hot']:7.1f} us back to back, "
            f"{item['after_idle']:7.1f} us after 10 ms idle ({times:.1f}x), CPU time",
            flush=True,
        )


def main() -> int:
    for label, micros in run().items():
        print(f"[in-process] {label:<30} {micros:7.1f} us", flush=True)
    print_after_idle(after_idle())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
