"""Prometheus metrics for ``/metrics``: reviews, latency, policy and certificate reloads.

Each server owns its registry (no module-level globals), so tests and several apps in one process
never share counters. The hot path is one dictionary lookup per label set: label children are
cached here instead of going through ``.labels()`` (which takes a lock and builds a tuple from
keyword arguments) on every review.

The latency histogram's buckets contain every bucket boundary of the apiserver's own histograms for
the same calls, ``apiserver_admission_webhook_admission_duration_seconds`` (0.005 … 25 s, see
k8s.io/apiserver pkg/admission/metrics) and ``apiserver_authorization_webhook_duration_seconds``
(Prometheus' default buckets, plugin/pkg/authorizer/webhook/metrics), plus 1 ms and 2.5 ms below
them because the guard itself usually answers in about a millisecond. Dashboards can therefore put
the guard's view and the apiserver's view of the same request side by side, bucket for bucket.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import metrics_core, registry

from webhook import decisionlog, engine

APISERVER_ADMISSION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0)
APISERVER_AUTHORIZATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = tuple(
    sorted({0.001, 0.0025, *APISERVER_ADMISSION_BUCKETS, *APISERVER_AUTHORIZATION_BUCKETS})
)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the guard exports, registered in a registry of its own."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        r = self.registry
        self.reviews = prometheus_client.Counter(
            "agent_guard_reviews",
            "Reviews answered, by endpoint, decision (allow, deny, would-deny) and effective mode.",
            ["endpoint", "decision", "mode"],
            registry=r,
        )
        self.guard_decisions = prometheus_client.Counter(
            "agent_guard_guard_decisions",
            "Reviews a guard objected to, per guard: deny (enforce) or would-deny (dry-run).",
            ["endpoint", "guard", "decision", "mode"],
            registry=r,
        )
        self.errors = prometheus_client.Counter(
            "agent_guard_internal_errors",
            "Reviews that failed closed because the engine or a guard crashed (see the log).",
            ["endpoint"],
            registry=r,
        )
        self.duration = prometheus_client.Histogram(
            "agent_guard_review_duration_seconds",
            "Time from the first byte of a review request to the last byte of its answer.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.responses = prometheus_client.Counter(
            "agent_guard_http_responses",
            "HTTP responses on the review endpoints by status code (4xx: malformed or oversized reviews).",
            ["endpoint", "code"],
            registry=r,
        )
        self.policy_reloads = prometheus_client.Counter(
            "agent_guard_policy_reloads",
            "Policy reloads after a change of the policy files: ok, or failed (the last good policy stays).",
            ["result"],
            registry=r,
        )
        self.certificate_reloads = prometheus_client.Counter(
            "agent_guard_certificate_reloads",
            "Serving certificate reloads after tls.crt/tls.key changed: ok, or failed (the old one stays).",
            ["result"],
            registry=r,
        )
        self.policy_loaded = prometheus_client.Gauge(
            "agent_guard_policy_last_reload_success_timestamp_seconds",
            "Unix time at which the policy in force was loaded.",
            registry=r,
        )
        self.decision_lines_dropped_total = prometheus_client.Counter(
            "agent_guard_decision_log_dropped_lines",
            "Decision lines not written: queue-full (the log reader is too slow or stalled) or "
            "write-error (stdout failed: full disk, broken pipe). Reviews are answered either way.",
            ["reason"],
            registry=r,
        )
        self.decision_log_failing = prometheus_client.Gauge(
            "agent_guard_decision_log_failing",
            "1 while writing decision lines to stdout fails (see /readyz decisionLogError), else 0.",
            registry=r,
        )
        self._not_after: datetime.datetime | None = None
        self.certificate_expiry = prometheus_client.Gauge(
            "agent_guard_certificate_expiry_seconds",
            "Seconds until the serving certificate in use expires (negative: expired).",
            registry=r,
        )
        self.certificate_expiry.set_function(self._seconds_left)
        prometheus_client.ProcessCollector(registry=r)
        for result in ("ok", "failed"):  # export zeros, so alerts on increase() work from the start
            self.policy_reloads.labels(result)
            self.certificate_reloads.labels(result)
        for reason in ("queue-full", "write-error"):
            self.decision_lines_dropped_total.labels(reason)
        self._children: dict[tuple[Any, ...], Any] = {}

    def track(self, endpoints: Iterable[str]) -> None:
        """Export the latency histogram of each review endpoint from the start, at zero.

        The endpoint names come from the app's one table (``app.ENDPOINTS``), not from a copy here.
        """
        for endpoint in endpoints:
            self._child(self.duration, endpoint)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def review(self, endpoint: str, verdict: engine.Verdict, global_mode: str) -> None:
        """Count one answered review and the guards that objected to it.

        A crash of the engine itself arrives here as a fail-closed verdict whose finding is an error
        (``engine.fail_closed``), so it is counted like any other internal error.
        """
        mode = decisionlog.effective_mode(verdict, global_mode)
        self._child(self.reviews, endpoint, verdict.decision, mode).inc()
        for finding in verdict.findings:
            decision = "deny" if finding.mode == "enforce" else "would-deny"
            self._child(self.guard_decisions, endpoint, finding.guard, decision, finding.mode).inc()
            if finding.error:
                self._child(self.errors, endpoint).inc()

    def response(self, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.duration, endpoint).observe(seconds)
        self._child(self.responses, endpoint, str(status)).inc()

    def policy_reload(self, ok: bool) -> None:
        self._child(self.policy_reloads, "ok" if ok else "failed").inc()
        if ok:
            self.policy_loaded.set_to_current_time()

    def certificate_reload(self, ok: bool) -> None:
        self._child(self.certificate_reloads, "ok" if ok else "failed").inc()

    def decision_lines_dropped(self, reason: str, lines: int) -> None:
        """Called from the decision writer's thread as well as the event loop (counters are locked)."""
        self._child(self.decision_lines_dropped_total, reason).inc(lines)

    def decision_log_failed(self, failing: bool) -> None:
        self.decision_log_failing.set(1 if failing else 0)

    def certificate_in_use(self, not_after: datetime.datetime) -> None:
        self._not_after = not_after

    def _seconds_left(self) -> float:
        if self._not_after is None:
            return float("nan")
        return (self._not_after - datetime.datetime.now(datetime.UTC)).total_seconds()

    def watch_state(self, judge: Callable[[], engine.Engine]) -> None:
        """Export the runtime state of the engine in force (budget ledger, approvals) at scrape time.

        Budget *denials* are ``agent_guard_guard_decisions_total{guard="delete-budget"}``.
        """
        self.registry.register(_StateCollector(judge))

    def exposition(self) -> bytes:
        """The text format for a scrape."""
        return bytes(prometheus_client.generate_latest(self.registry))


class _StateCollector(registry.Collector):
    """Reads the engine's state at scrape time (one ledger and store per server, kept across reloads)."""

    def __init__(self, judge: Callable[[], engine.Engine]) -> None:
        self.judge = judge

    def collect(self) -> Iterator[metrics_core.Metric]:
        judge = self.judge()
        ledger, store = judge.ledger, judge.approvals
        counter, gauge = metrics_core.CounterMetricFamily, metrics_core.GaugeMetricFamily
        exported: tuple[tuple[Any, str, str, float], ...] = (
            (counter, "agent_guard_budget_charged_requests",
             "Destructive agent requests admitted and charged to a delete-budget (this process).",
             ledger.charged_total),
            (gauge, "agent_guard_budget_tracked_keys",
             "Budget buckets (identity, namespace) with a charge inside their window (this process).",
             ledger.keys),
            (gauge, "agent_guard_budget_tracked_requests",
             "Charges the ledger holds; each lapses one window after it was made (this process).",
             ledger.entries),
            (counter, "agent_guard_approvals_offered",
             "Approvable denials that carried an approval id and command (this process).",
             store.offered_total),
            (counter, "agent_guard_approvals_used",
             "Agent requests admitted once by a human's Approval (this process).",
             store.used_total),
            (gauge, "agent_guard_approvals_known",
             "Approval objects the watcher knows (expired and consumed ones included until deleted).",
             len(store)),
            (gauge, "agent_guard_approvals_watching",
             "1 while Approvals are watched (serve --approvals and the CRD listed), else 0.",
             1.0 if store.enabled else 0.0),
        )  # fmt: skip
        for family, name, documentation, value in exported:
            yield family(name, documentation, value=value)
