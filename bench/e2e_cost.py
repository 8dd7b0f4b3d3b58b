"""What the apiserver adds, side by side: no webhook, the floor, the guard, the in-tree alternative.

One control plane (the e2e harness's kube-apiserver + etcd), four conditions served by it at once and
told apart by namespace, so every request of every condition goes through the same apiserver, etcd
and client in the same seconds:

- ``none``: no admission check of ours (only the in-tree plugins every cluster runs);
- ``floor``: a no-op webhook (``bench.floor``: the guard's uvicorn/TLS settings, a constant allow),
  registered exactly like the guard (the rendered configuration, same rules, matchConditions,
  timeout), so what it adds is the webhook hop itself;
- ``guard``: the real ``agent-guard serve`` and its rendered configuration;
- ``intree``: what a user would pick instead for the same rules: a ValidatingAdmissionPolicy (CEL)
  refusing namespace deletion by agents (same agent CEL expression as the guard's matchConditions)
  plus Pod Security Admission ``baseline`` enforced on the namespace.

Each condition has a namespace labelled with its name; the two webhook configurations and the
policy binding select their namespace by that label (for a Namespace object the selector reads the
object's own labels), so all four are registered for the whole run. The authorizer is Node + RBAC
(the agent is bound to cluster-admin): this phase measures admission alone.

The requests are paired: each step sends the same kind of request once per condition, in a shuffled
order, so drift of the shared machine (other work on the two cores, etcd compaction, GC) hits all
four alike; earlier runs alternating rounds of 600 could not resolve a 0.4 ms difference. Workloads:
agent Pod creations, agent Deployment creations, agent namespace deletes (server-side dry-run: the
guard and the policy deny them, the others would delete the namespace, so nothing is persisted) and
a mixed stream of the three. Latency is measured at the client, as an MCP server sees it; "added"
is a condition's quantile minus the same quantile of ``none``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import parser

from tests import reviews, serving
from tests.e2e import cluster, kube, stack
from tests.e2e.controlplane import binaries
from webhook import identity, manifests

CONDITIONS = ("none", "floor", "guard", "intree")
WORKLOADS = ("pod", "deployment", "namespace-delete", "mixed")
LABEL = "bench.agent-guard.io/condition"
POLICY_NAME = "bench-agent-namespace-delete"
FLOOR_CONFIGURATION = "bench-floor"
FLOOR_WEBHOOK = "floor.bench.agent-guard.io"
WEBHOOK_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
GUARD_METRIC = "agent_guard_review_duration_seconds"
VAP_API = "/apis/admissionregistration.k8s.io/v1"
SETTLE_TIMEOUT_SECONDS = 30.0
AUTHORIZATION = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AuthorizationConfiguration
authorizers:
- type: Node
  name: node
- type: RBAC
  name: rbac
"""


def namespace(condition: str) -> str:
    return f"bench-{condition}"


def _pod(name: str, where: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": where, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


def _deployment(name: str, where: str) -> dict[str, Any]:
    template = _pod(name, where)
    del template["metadata"]["name"], template["metadata"]["namespace"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": where},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bench"}}, "template": template},
    }


def request_for(kind: str, condition: str, name: str) -> tuple[kube.Request, int]:
    """The request of ``kind`` in ``condition``'s namespace, and the status it must get."""
    where = namespace(condition)
    if kind == "pod":
        return kube.Request("POST", f"/api/v1/namespaces/{where}/pods", _pod(name, where)), 201
    if kind == "deployment":
        path = f"/apis/apps/v1/namespaces/{where}/deployments"
        return kube.Request("POST", path, _deployment(name, where)), 201
    denied = condition in ("guard", "intree")
    return kube.Request("DELETE", f"/api/v1/namespaces/{where}").dry_run(), 403 if denied else 200


def validating_admission_policy(loaded: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The in-tree rule for namespace deletion by agents: a policy and its binding to ``intree``."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["DELETE"],
                        "resources": ["namespaces"],
                    }
                ]
            },
            "matchConditions": [
                {"name": "agent-identity", "expression": identity.cel_expression(loaded.agents, "admission")}
            ],
            "validations": [
                {
                    "expression": "false",
                    "message": "agents may not delete namespaces; ask a human to delete it",
                    "reason": "Forbidden",  # 403 like the guard's denial (the default is 422 Invalid)
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {LABEL: "intree"}}},
        },
    }
    return policy, binding


def scoped(configuration: dict[str, Any], condition: str, name: str) -> dict[str, Any]:
    """A rendered webhook configuration, renamed and limited to ``condition``'s namespace."""
    configuration["metadata"]["name"] = name
    for webhook in configuration["webhooks"]:
        webhook["namespaceSelector"] = {"matchLabels": {LABEL: condition}}
        if condition == "floor":  # the apiserver's metrics name each webhook: tell the two apart
            webhook["name"] = FLOOR_WEBHOOK
    return configuration


def histogram_means(text: str, metric: str, by: str) -> dict[str, dict[str, float]]:
    """Calls and mean milliseconds of the histogram ``metric`` in Prometheus text, per value of its
    label ``by`` (its other labels summed)."""
    totals: dict[str, dict[str, float]] = {}
    for family in parser.text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            part = sample.name.removeprefix(metric)
            if part in ("_sum", "_count"):
                entry = totals.setdefault(sample.labels.get(by, ""), {"_sum": 0.0, "_count": 0.0})
                entry[part] += sample.value
    return {
        key: {"calls": item["_count"], "mean_ms": 1000 * item["_sum"] / item["_count"]}
        for key, item in totals.items()
        if item["_count"]
    }


def webhook_calls(admin: kube.Client) -> dict[str, dict[str, float]]:
    """The apiserver's own view of each webhook call (``apiserver_admission_webhook_admission_duration_
    seconds``): calls and mean duration per webhook, from its client's send to the decoded answer."""
    text = admin.request(kube.Request("GET", "/metrics", accept="text/plain")).text
    return histogram_means(text, WEBHOOK_METRIC, "name")


def guard_review_time(guard: serving.Guard) -> dict[str, float]:
    """The guard's own histogram of its reviews (``agent_guard_review_duration_seconds``: body read,
    parse, judge, answer built; the decision line comes after the answer), so the hop (TLS, HTTP,
    the apiserver's client) and the guard's work can be told apart in what the apiserver measures."""
    with urllib.request.urlopen(f"{guard.url}/metrics", context=guard.context(), timeout=10) as answer:
        text = answer.read().decode()
    means = histogram_means(text, GUARD_METRIC, "endpoint")
    return means.get("validate", {"calls": 0.0, "mean_ms": 0.0})


def put(admin: kube.Client, collection: str, obj: dict[str, Any]) -> None:
    """Create or replace ``obj`` (cluster-scoped) in ``collection``."""
    path = f"{collection}/{obj['metadata']['name']}"
    existing = admin.request(kube.Request("GET", path))
    if existing.status == 404:
        admin.ok(kube.Request("POST", collection, obj))
    else:
        obj["metadata"]["resourceVersion"] = existing.body["metadata"]["resourceVersion"]
        admin.ok(kube.Request("PUT", path, obj))


@contextlib.contextmanager
def floor_process(workdir: Path, cert_dir: Path) -> Iterator[serving.Guard]:
    """``bench.floor`` (the no-op webhook on the guard's server stack) as a process, until closed."""
    port = serving.free_port()
    log = workdir / "floor.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(port), "--cert-dir", str(cert_dir)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=reviews.ROOT,
        )
    floor = serving.Guard(process, port, cert_dir, log)
    try:
        serving.wait_ready(floor)
        yield floor
    finally:
        floor.stop()


def register(e2e: stack.Stack, floor: serving.Guard) -> None:
    """The floor's configuration, then the guard's, then the policy; return once the last two deny.

    The apiserver's webhook informer applies configurations in the order they were written, so once
    the guard's (written after the floor's) is in force, so is the floor's.
    """
    for condition in CONDITIONS:
        labels = {LABEL: condition}
        if condition == "intree":
            labels["pod-security.kubernetes.io/enforce"] = "baseline"
        kube.ensure_namespace(e2e.admin, namespace(condition), labels)
    collection = stack.WEBHOOK_CONFIGURATIONS
    put(e2e.admin, collection, scoped(e2e.webhook.rendered(floor), "floor", FLOOR_CONFIGURATION))
    put(
        e2e.admin,
        collection,
        scoped(e2e.webhook.rendered(e2e.local_guard()), "guard", manifests.CONFIGURATION_NAME),
    )
    policy, binding = validating_admission_policy(e2e.policy)
    put(e2e.admin, f"{VAP_API}/validatingadmissionpolicies", policy)
    put(e2e.admin, f"{VAP_API}/validatingadmissionpolicybindings", binding)
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    for condition in ("guard", "intree"):
        request, _ = request_for("namespace-delete", condition, "")
        while (reply := e2e.agent.request(request)).status != 403:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {condition} condition does not deny namespace deletion yet: {reply}")
            time.sleep(0.1)


def unregister(admin: kube.Client) -> None:
    for path in (
        f"{stack.WEBHOOK_CONFIGURATIONS}/{FLOOR_CONFIGURATION}",
        f"{VAP_API}/validatingadmissionpolicybindings/{POLICY_NAME}",
        f"{VAP_API}/validatingadmissionpolicies/{POLICY_NAME}",
    ):
        admin.request(kube.Request("DELETE", path))


def measure(
    agent: kube.Client, kinds: Callable[[int], str], steps: int, tag: str, rng: random.Random
) -> dict[str, list[float]]:
    """``steps`` paired steps: one request of ``kinds(step)`` per condition, in a shuffled order."""
    latencies: dict[str, list[float]] = {condition: [] for condition in CONDITIONS}
    order = list(CONDITIONS)
    for step in range(steps):
        rng.shuffle(order)
        kind = kinds(step)
        for condition in order:
            request, expected = request_for(kind, condition, f"{tag}-{step}")
            started = time.perf_counter()
            reply = agent.request(request)
            latencies[condition].append((time.perf_counter() - started) * 1000)
            if reply.status != expected:
                raise SystemExit(f"{kind} in {condition}: expected {expected}, got {reply}")
    return latencies


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: dict[str, list[float]], chunks: int = 5) -> dict[str, Any]:
    """Per condition: count, median/p99/p99.9, added (minus ``none``), and the spread of the added
    median over ``chunks`` consecutive parts of the run (min, max)."""
    base = sorted(latencies["none"])
    out: dict[str, Any] = {}
    for condition, values in latencies.items():
        ordered = sorted(values)
        item: dict[str, Any] = {"count": len(ordered)}
        for label, q in (("median", 0.5), ("p99", 0.99), ("p999", 0.999)):
            item[f"{label}_ms"] = quantile(ordered, q)
            item[f"added_{label}_ms"] = item[f"{label}_ms"] - quantile(base, q)
        size = max(1, len(values) // chunks)
        parts = [
            statistics.median(values[i : i + size]) - statistics.median(latencies["none"][i : i + size])
            for i in range(0, size * chunks, size)
            if values[i : i + size]
        ]
        item["added_median_spread_ms"] = [min(parts), max(parts)]
        out[condition] = item
    floor, guard = out["floor"], out["guard"]
    out["guard_over_floor"] = {
        "median_ratio": guard["added_median_ms"] / floor["added_median_ms"]
        if floor["added_median_ms"] > 0
        else None,
        "own_share_median_ms": guard["added_median_ms"] - floor["added_median_ms"],
        "p99_over_floor_ms": guard["added_p99_ms"] - floor["added_p99_ms"],
    }
    return out


def run(requests: int, seed: int = 19) -> dict[str, Any]:
    """``requests`` paired steps per workload (each step: one request per condition)."""
    found = binaries.ensure_all(lambda message: print(message, flush=True))
    rng = random.Random(seed)
    results: dict[str, Any] = {"requests_per_condition_and_workload": requests}
    with tempfile.TemporaryDirectory(prefix="agent-guard-e2e-cost-") as tmp:
        workdir = Path(tmp)
        authorization = workdir / "authorization.yaml"
        authorization.write_text(AUTHORIZATION)
        with (
            stack.prepared(workdir) as plan,
            cluster.provide(workdir, found, authorization) as target,
            stack.up(target, plan) as e2e,
            floor_process(workdir, plan.cert_dir) as floor,
        ):
            try:
                register(e2e, floor)
                measure(e2e.agent, lambda s: WORKLOADS[s % 3], 60, "warm", rng)  # connections, caches
                mixed = [rng.choice(WORKLOADS[:3]) for _ in range(requests)]
                for workload in WORKLOADS:
                    kinds = (lambda s: mixed[s]) if workload == "mixed" else (lambda s, w=workload: w)
                    started = time.monotonic()
                    latencies = measure(e2e.agent, kinds, requests, workload, rng)
                    results[workload] = summary(latencies)
                    results[workload]["seconds"] = round(time.monotonic() - started, 1)
                    print(format_table(workload, results[workload]), flush=True)
                results["apiserver_webhook_calls"] = calls = webhook_calls(e2e.admin)
                for name, item in calls.items():
                    print(
                        f"[apiserver] webhook {name}: {item['calls']:.0f} calls, "
                        f"mean {item['mean_ms']:.2f} ms "
                        "(the apiserver's metric: its client's send to the decoded answer)",
                        flush=True,
                    )
                results["guard_review_time"] = own = guard_review_time(e2e.local_guard())
                print(
                    f"[apiserver] inside the guard: {own['calls']:.0f} reviews, mean {own['mean_ms']:.3f} ms "
                    "(its own histogram: request head read to answer built)",
                    flush=True,
                )
            finally:
                with contextlib.suppress(Exception):  # the cluster may be gone
                    unregister(e2e.admin)
    return results


def format_table(workload: str, result: dict[str, Any]) -> str:
    lines = [
        f"[apiserver] {workload} ({result['none']['count']} per condition, {result.get('seconds', 0)} s): "
        "latency at the client, and added over no webhook"
    ]
    for condition in CONDITIONS:
        item = result[condition]
        low, high = item["added_median_spread_ms"]
        lines.append(
            f"[apiserver]   {condition:<7} median {item['median_ms']:6.2f} ms "
            f"({item['added_median_ms']:+5.2f}, "
            f"parts {low:+.2f}..{high:+.2f})  p99 {item['p99_ms']:6.2f} ({item['added_p99_ms']:+5.2f})  "
            f"p99.9 {item['p999_ms']:6.2f} ({item['added_p999_ms']:+5.2f})"
        )
    ratio = result["guard_over_floor"]
    median_ratio = ratio["median_ratio"]
    lines.append(
        "[apiserver]   guard/floor added median "
        + (f"{median_ratio:.2f}x" if median_ratio is not None else "n/a")
        + f"; guard's own share {ratio['own_share_median_ms']:+.2f} ms (target <= 0.10); "
        f"added p99 over the floor's {ratio['p99_over_floor_ms']:+.2f} ms (target <= 1)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per condition and workload (default 1000)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = run(args.requests)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
