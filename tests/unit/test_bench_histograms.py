"""bench.e2e_cost reads two histograms from Prometheus text: the apiserver's webhook calls and the
guard's own reviews. Both go through one reader; this pins what it sums and what it leaves out."""

from __future__ import annotations

from bench import e2e_cost

TEXT = """\
# HELP apiserver_admission_webhook_admission_duration_seconds [STABLE] Admission webhook latency
# TYPE apiserver_admission_webhook_admission_duration_seconds histogram
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a",operation="CREATE",le="0.005"} 3
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a",operation="CREATE",le="+Inf"} 4
apiserver_admission_webhook_admission_duration_seconds_sum{name="a",operation="CREATE"} 0.004
apiserver_admission_webhook_admission_duration_seconds_count{name="a",operation="CREATE"} 4
apiserver_admission_webhook_admission_duration_seconds_bucket{name="a",operation="DELETE",le="+Inf"} 1
apiserver_admission_webhook_admission_duration_seconds_sum{name="a",operation="DELETE"} 0.006
apiserver_admission_webhook_admission_duration_seconds_count{name="a",operation="DELETE"} 1
apiserver_admission_webhook_admission_duration_seconds_bucket{name="idle",le="+Inf"} 0
apiserver_admission_webhook_admission_duration_seconds_sum{name="idle"} 0
apiserver_admission_webhook_admission_duration_seconds_count{name="idle"} 0
# HELP other_seconds another histogram
# TYPE other_seconds histogram
other_seconds_sum{name="a"} 100
other_seconds_count{name="a"} 1
"""


def test_calls_and_mean_per_label_value_other_labels_summed() -> None:
    means = e2e_cost.histogram_means(TEXT, e2e_cost.WEBHOOK_METRIC, "name")
    assert means == {"a": {"calls": 5.0, "mean_ms": 2.0}}  # (4 + 6 ms) / 5; "idle" had no calls
    assert e2e_cost.histogram_means(TEXT, "missing_seconds", "name") == {}
