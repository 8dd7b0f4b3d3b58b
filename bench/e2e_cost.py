"""End-to-end cost of the guard: agent pod creations through a real kube-apiserver.

The e2e harness's control plane (kube-apiserver + etcd built from the Go module proxy) and the real
``agent-guard serve`` are started; the agent (bound to cluster-admin) creates benign pods, with the
ValidatingWebhookConfiguration registered and without it, in alternating rounds so that drift of the
machine hits both sides alike. Latency is measured at the client, as an MCP server would see it.
The apiserver authorizes the agent through the guard's ``/authorize`` in both conditions (its
authorizer chain is fixed at start-up), so the difference is what the admission webhook adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e import cluster, kube, stack
from tests.e2e.controlplane import binaries

NAMESPACE = "bench-cost"


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


def _create(agent: kube.Client, names: list[str]) -> list[float]:
    latencies = []
    for name in names:
        started = time.perf_counter()
        reply = agent.request(kube.Request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", _pod(name)))
        latencies.append((time.perf_counter() - started) * 1000)
        if reply.status != 201:
            raise SystemExit(f"creating pod {name} failed: {reply}")
    return latencies


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "mean_ms": statistics.fmean(ordered),
    }


def run(pods: int, rounds: int) -> dict[str, Any]:
    found = binaries.ensure_all(lambda message: print(message, flush=True))
    per_round = max(1, pods // rounds)
    results: dict[str, list[float]] = {"with_guard": [], "without_guard": []}
    with tempfile.TemporaryDirectory(prefix="agent-guard-e2e-cost-") as tmp:
        workdir = Path(tmp)
        with (
            stack.prepared(workdir) as plan,
            cluster.provide(workdir, found, plan.authorization_config) as target,
            stack.up(target, plan) as e2e,
        ):
            kube.ensure_namespace(e2e.admin, NAMESPACE)
            _create(e2e.agent, [f"warm-{i}" for i in range(20)])  # connections, caches, informers
            for index in range(rounds):
                e2e.webhook.point_at(e2e.local_guard())
                results["with_guard"] += _create(e2e.agent, [f"with-{index}-{i}" for i in range(per_round)])
                e2e.webhook.remove()
                time.sleep(1.0)  # let the apiserver's webhook informer drop the configuration
                results["without_guard"] += _create(
                    e2e.agent, [f"without-{index}-{i}" for i in range(per_round)]
                )
            calls = e2e.local_guard().output().count('"name":"with-')
    with_guard, without = _summary(results["with_guard"]), _summary(results["without_guard"])
    return {
        "pods_per_condition": with_guard["count"],
        "with_guard": with_guard,
        "without_guard": without,
        "median_difference_ms": with_guard["median_ms"] - without["median_ms"],
        "p99_difference_ms": with_guard["p99_ms"] - without["p99_ms"],
        "guard_reviews_of_measured_pods": calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=400, help="pod creations per condition (default 400)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = run(args.pods, args.rounds)
    for label in ("with_guard", "without_guard"):
        item = result[label]
        print(
            f"[e2e] {label:<14} {item['count']} pods  median {item['median_ms']:6.2f} ms  "
            f"p99 {item['p99_ms']:6.2f} ms",
            flush=True,
        )
    print(
        f"[e2e] guard adds: median {result['median_difference_ms']:+.2f} ms, p99 "
        f"{result['p99_difference_ms']:+.2f} ms ({result['guard_reviews_of_measured_pods']} reviews seen)",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
