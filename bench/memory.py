"""Peak memory of the real server for the largest reviews it accepts (``python -m bench.memory``).

Starts ``agent-guard serve`` and reads its resident set from /proc: at rest, and its peak
(``VmHWM``) after each load below. The shapes are the ones that cost the most memory per byte the
guard still accepts (``app.MAX_JSON_VALUES`` values, ``app.DEFAULT_MAX_BODY`` bytes), as an
UPDATE of a custom resource (``*/*`` is routed to the guard, and a custom resource may hold any
JSON): object and old object together at the limit. The Deployment's memory limit is set from
these numbers (manifests/base/deployment.yaml, docs/hardening.md).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import reviews, serving
from webhook import app, server

MiB = 1024 * 1024


def _status(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def _reset_peak(pid: int) -> None:
    """Start VmHWM afresh (proc(5): writing 5 to clear_refs resets the peak resident set size)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _update(items: list[Any]) -> bytes:
    """A custom-resource UPDATE whose object and old object each carry half of ``items``."""
    half = len(items) // 2

    def obj(part: list[Any]) -> dict[str, Any]:
        return {
            "apiVersion": "example.com/v1",
            "kind": "Blob",
            "metadata": {"name": "b"},
            "spec": {"items": part},
        }

    new, old = obj(items[:half]), obj(items[half:])
    request = reviews.admission_request("UPDATE", "blobs", group="example.com", name="b", obj=new, old=old)
    return reviews.body(reviews.review(request))


def _largest(make: Callable[[int], bytes]) -> bytes:
    """The largest body of this shape the guard still parses (binary search on the item count)."""
    low, high = 1, app.MAX_JSON_VALUES
    while low < high:
        middle = (low + high + 1) // 2
        body = make(middle)
        if app.json_values(body) <= app.MAX_JSON_VALUES and len(body) <= app.DEFAULT_MAX_BODY:
            low = middle
        else:
            high = middle - 1
    return make(low)


SHAPES: dict[str, Callable[[int], bytes]] = {
    "empty objects [{},{},...]": lambda n: _update([{}] * n),
    "one-key objects [{'a':1},...]": lambda n: _update([{"a": 1}] * n),
    "short strings ['ab',...]": lambda n: _update(["ab"] * n),
    "numbers [1000000,...]": lambda n: _update([1000000 + i for i in range(n)]),
    "long strings (body limit)": lambda n: _update(["x" * 4096] * (n // 64 or 1)),
}


def _send(guard: serving.Guard, context: ssl.SSLContext, body: bytes) -> int:
    connection = http.client.HTTPSConnection("localhost", guard.port, context=context, timeout=60)
    connection.request("POST", "/validate", body=body)
    status = connection.getresponse().status
    connection.close()
    return status


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as work,
        serving.running(Path(work), Path(work) / "certs", "--reload-interval", "0") as guard,
    ):
        pid, context = guard.process.pid, guard.context()
        for _ in range(50):  # warm up: imports, first handshakes
            _send(guard, context, reviews.body(reviews.namespace_delete()))
        results["at rest (MiB)"] = round(_status(pid)["VmRSS"] / MiB, 1)
        for label, make in SHAPES.items():
            body = _largest(make)
            _reset_peak(pid)
            status = _send(guard, context, body)
            stats = _status(pid)
            results[label] = {
                "body (KiB)": len(body) // 1024,
                "JSON values": app.json_values(body),
                "HTTP": status,
                "peak RSS (MiB)": round(stats["VmHWM"] / MiB, 1),
                "RSS after (MiB)": round(stats["VmRSS"] / MiB, 1),
            }
        # Many maximal bodies at once: buffered within app.BODY_BUDGET, the rest get 503.
        body = _largest(SHAPES["long strings (body limit)"])
        _reset_peak(pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(25) as pool:
            statuses = list(pool.map(lambda _: _send(guard, context, body), range(25)))
        stats = _status(pid)
        results["25 body-limit reviews at once"] = {
            "answered 200": statuses.count(200),
            "answered 503": statuses.count(503),
            "seconds": round(time.monotonic() - started, 1),
            "peak RSS (MiB)": round(stats["VmHWM"] / MiB, 1),
            "RSS after (MiB)": round(stats["VmRSS"] / MiB, 1),
        }
        # Idle TLS connections up to the cap (each holds TLS and parser state until its deadline).
        _reset_peak(pid)
        held = []
        for _ in range(server.MAX_CONNECTIONS - 5):
            raw = socket.create_connection(("localhost", guard.port), timeout=10)
            held.append(context.wrap_socket(raw, server_hostname="localhost"))
        time.sleep(0.5)
        stats = _status(pid)
        results[f"{len(held)} idle TLS connections"] = {
            "peak RSS (MiB)": round(stats["VmHWM"] / MiB, 1),
            "RSS (MiB)": round(stats["VmRSS"] / MiB, 1),
        }
        for sock in held:
            sock.close()
    return results


def main() -> int:
    json.dump(run(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
