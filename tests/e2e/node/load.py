"""A steady load of agent and admin requests while the guard is disturbed, and what came of each.

Three streams, each at ``RATE_PER_STREAM`` requests per second, on their own threads:

- ``admin``: creates a ConfigMap (never sent to the guard: the matchConditions exclude the admin).
  Any answer but 201 is a failed admin request; the issue's target is 0.
- ``agent``: creates a ConfigMap, which the authorizer and the admission webhook both judge and
  allow. 201 is served; HTTP 500 naming the webhook or ``/authorize`` is a request that failed
  closed (the guard was unreachable); anything else is counted as ``other``.
- ``attack``: the agent's dry-run delete of the probe namespace. 403 with ``[namespace-delete]`` (from
  the guard's authorizer, or its admission webhook) is denied; 500 is failed closed; any 2xx is an
  attack admitted (must never happen).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.e2e import incluster, kube, stack

STREAMS = ("admin", "agent", "attack")
RATE_PER_STREAM = 8.0  # three streams: 24 requests/s
MINIMUM_SECONDS = 30.0


def classify_agent(reply: kube.Reply) -> str:
    if reply.status == 201:
        return "served"
    if reply.status == 500 and ("failed calling webhook" in reply.message or "/authorize" in reply.message):
        return "failed-closed"
    return "other"


def classify_attack(reply: kube.Reply) -> str:
    if 200 <= reply.status < 300:
        return "admitted"
    if reply.status == 403 and "[namespace-delete]" in reply.message:  # the authorizer or admission
        return "denied"
    if reply.status == 500:
        return "failed-closed"
    return "other"


def classify_admin(reply: kube.Reply) -> str:
    return "served" if reply.status == 201 else "failed"


@dataclass
class Tally:
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in STREAMS})
    samples: dict[str, list[str]] = field(default_factory=dict)  # one example answer per odd outcome
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stream_name: str, outcome: str, reply: kube.Reply | None, error: str = "") -> None:
        with self.lock:
            self.counts[stream_name][outcome] += 1
            if outcome not in ("served", "denied"):
                self.samples.setdefault(f"{stream_name}/{outcome}", [str(reply) if reply else error])

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def rate(self) -> float:
        return self.total() / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        parts = [f"{name} {dict(counts)}" for name, counts in self.counts.items()]
        return f"{self.total()} requests in {self.seconds:.0f}s ({self.rate():.1f}/s): " + "; ".join(parts)


def _requests(namespace: str) -> dict[str, kube.Request]:
    configmap = {"metadata": {"generateName": "load-"}, "data": {"k": "v"}}
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    return {
        "admin": kube.Request("POST", path, configmap),
        "agent": kube.Request("POST", path, configmap),
        "attack": kube.Request("DELETE", f"/api/v1/namespaces/{stack.PROBE_NAMESPACE}").dry_run(),
    }


@contextlib.contextmanager
def steady(cluster: incluster.InClusterStack, namespace: str) -> Iterator[Tally]:
    """The three streams until the ``with`` block ends (and at least ``MINIMUM_SECONDS``)."""
    tally = Tally()
    stop = threading.Event()
    requests = _requests(namespace)
    clients = {"admin": cluster.admin, "agent": cluster.agent, "attack": cluster.agent}
    classify: dict[str, Callable[[kube.Reply], str]] = {
        "admin": classify_admin,
        "agent": classify_agent,
        "attack": classify_attack,
    }

    def run(name: str) -> None:
        interval, next_at = 1.0 / RATE_PER_STREAM, time.monotonic()
        while not stop.is_set():
            try:
                reply = clients[name].request(requests[name])
                tally.add(name, classify[name](reply), reply)
            except Exception as exc:  # a connection error is an outcome to count
                tally.add(name, "error", None, repr(exc))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in STREAMS]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        yield tally
        remaining = started + MINIMUM_SECONDS - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
        tally.seconds = time.monotonic() - started
