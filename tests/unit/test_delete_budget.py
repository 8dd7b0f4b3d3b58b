"""delete-budget: the sliding window, what is charged (and what never is), modes, reloads, memory."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests import reviews
from webhook import app, attributes, budget, engine, guards, metrics, policy, reload, review
from webhook.guards import delete_budget

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _policy(base: policy.Policy, mode: str | None = None, **settings: Any) -> policy.Policy:
    merged = dict(base.guards)
    merged["delete-budget"] = delete_budget.Settings.model_validate({"mode": mode, **settings})
    return dataclasses.replace(base, guards=merged)


def _delete(
    name: str = "cm-1",
    namespace: str = "shop",
    *,
    user: dict[str, Any] | None = None,
    uid: str | None = None,
    dry_run: bool = False,
    resource: str = "configmaps",
) -> attributes.AdmissionRequest:
    request = reviews.admission_request(
        "DELETE",
        resource,
        name=name,
        namespace=namespace,
        user=user,
        old={"apiVersion": "v1", "kind": "X", "metadata": {"name": name, "namespace": namespace}},
    )
    if uid is not None:
        request["uid"] = uid
    if dry_run:
        request["dryRun"] = True
    return review.parse_admission(reviews.body(reviews.review(request)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _engine(
    base: policy.Policy, clock: Clock, ledger: budget.Ledger | None = None, **settings: Any
) -> engine.Engine:
    mode = settings.pop("mode", None)
    return engine.Engine(_policy(base, mode, **settings), ledger=ledger, clock=clock)


def test_limit_then_refused_then_refilled_one_by_one(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, limit=3, window="1m")
    for second in range(3):
        clock.now = T0 + 10 * second  # charged at T0, T0+10, T0+20
        assert judge.admit(_delete(f"cm-{second}")).allowed
    clock.now = T0 + 30
    verdict = judge.admit(_delete("cm-3"))
    assert not verdict.allowed and verdict.guards == ("delete-budget",)
    message = verdict.denials[0].message
    assert message.startswith(
        "[delete-budget] system:serviceaccount:mcp-system:mcp-k8s-go has already made 3 "
    )
    assert "in the last 1m, the limit for an agent is 3 per 1m" in message
    assert 'delete of configmaps "shop/cm-3"' in message
    assert "refills by one at 08:01:00 UTC (in 30s) and fully at 08:01:20 UTC" in message
    assert "Do not retry in a loop" in message
    # Refused attempts are not charged: the oldest charge still lapses at T0+60.
    clock.now = T0 + 59.9
    assert not judge.admit(_delete("cm-3")).allowed
    clock.now = T0 + 60
    assert judge.admit(_delete("cm-3")).allowed  # one slot refilled ...
    assert not judge.admit(_delete("cm-4")).allowed  # ... and spent again
    clock.now = T0 + 80 + 60  # every charge has lapsed
    assert all(judge.admit(_delete(f"again-{i}")).allowed for i in range(3))


def test_sliding_window_allows_no_burst_at_a_boundary(shipped_policy: policy.Policy, clock: Clock) -> None:
    """Unlike fixed windows, no interval of length ``window`` ever holds more than ``limit`` charges."""
    judge = _engine(shipped_policy, clock, limit=2, window=60)
    admitted: list[float] = []
    for step in range(240):  # an agent trying every half second for two minutes
        clock.now = T0 + step * 0.5
        if judge.admit(_delete(f"cm-{step}")).allowed:
            admitted.append(clock.now)
    assert len(admitted) == 4
    assert all(later - earlier >= 60 for earlier, later in zip(admitted, admitted[2:], strict=False))


def test_refused_by_another_guard_is_not_charged(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, limit=1, window="1h")
    namespace_delete = _delete("prod", "", resource="namespaces")
    for _ in range(3):
        verdict = judge.admit(namespace_delete)
        assert verdict.guards == ("namespace-delete",)  # never the budget: nothing was spent
    assert judge.ledger.entries == 0
    assert judge.admit(_delete()).allowed


def test_dry_run_requests_are_judged_but_never_charged(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, limit=1, window="1h")
    for _ in range(3):
        assert judge.admit(_delete(dry_run=True)).allowed
    assert judge.ledger.entries == 0
    assert judge.admit(_delete()).allowed
    assert judge.admit(_delete("other", dry_run=True)).guards == ("delete-budget",)


def test_retried_review_with_the_same_uid_is_charged_once(
    shipped_policy: policy.Policy, clock: Clock
) -> None:
    judge = _engine(shipped_policy, clock, limit=1, window="1h")
    assert judge.admit(_delete(uid="same")).allowed
    assert judge.admit(_delete(uid="same")).allowed  # the apiserver re-sent the same call
    assert judge.ledger.charged_total == 1
    assert not judge.admit(_delete(uid="new")).allowed


def test_policy_dry_run_mode_admits_and_still_counts(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, mode="dry-run", limit=1, window="1h")
    assert judge.admit(_delete("a")).decision == "allow"
    verdict = judge.admit(_delete("b"))
    assert verdict.decision == "would-deny" and verdict.allowed
    assert "has already made 1 destructive requests" in verdict.warnings[0].message
    # The admitted request was charged (it happened), so the count is what the cluster really saw.
    assert judge.ledger.charged_total == 2


def test_non_agents_are_never_counted(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, limit=1, window="1h")
    for i in range(5):
        assert judge.admit(_delete(f"cm-{i}", user=reviews.ADMIN)) is engine.NOT_AGENT
    assert judge.ledger.entries == 0


def test_identities_have_separate_budgets(shipped_policy: policy.Policy, clock: Clock) -> None:
    other = {**reviews.AGENT, "username": "system:serviceaccount:mcp-system:other"}
    judge = _engine(shipped_policy, clock, limit=1, window="1h")
    assert judge.admit(_delete("a")).allowed
    assert judge.admit(_delete("b", user=other)).allowed
    assert not judge.admit(_delete("c")).allowed


def test_per_namespace_and_namespace_overrides(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(
        shipped_policy, clock, limit=1, window="1h", perNamespace=True, namespaces={"scratch": {"limit": 3}}
    )
    assert judge.admit(_delete("a", "shop")).allowed
    assert not judge.admit(_delete("b", "shop")).allowed
    assert judge.admit(_delete("a", "web")).allowed  # its own bucket
    assert all(judge.admit(_delete(f"s-{i}", "scratch")).allowed for i in range(3))
    refused = judge.admit(_delete("s-3", "scratch"))
    assert (
        'in namespace "scratch"' in refused.denials[0].message
        and "limit for an agent is 3" in refused.denials[0].message
    )


def test_shared_bucket_spans_namespaces_except_listed_ones(
    shipped_policy: policy.Policy, clock: Clock
) -> None:
    judge = _engine(
        shipped_policy, clock, limit=2, window="1h", namespaces={"prod": {"window": "2h", "limit": 1}}
    )
    assert judge.admit(_delete("a", "shop")).allowed
    assert judge.admit(_delete("a", "web")).allowed
    assert not judge.admit(_delete("b", "other")).allowed  # 2 spent across namespaces
    assert judge.admit(_delete("a", "prod")).allowed  # prod has its own
    refused = judge.admit(_delete("b", "prod"))
    assert "in the last 2h" in refused.denials[0].message


def test_scale_to_zero_is_charged(shipped_policy: policy.Policy, clock: Clock) -> None:
    judge = _engine(shipped_policy, clock, limit=1, window="1h")

    def scale(replicas_from: int, replicas_to: int) -> attributes.AdmissionRequest:
        obj = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
        }
        request = reviews.admission_request(
            "UPDATE",
            "deployments",
            group="apps",
            name="web",
            namespace="shop",
            obj={**obj, "spec": {"replicas": replicas_to}},
            old={**obj, "spec": {"replicas": replicas_from}},
        )
        return review.parse_admission(reviews.body(reviews.review(request)))

    assert judge.admit(scale(3, 1)).allowed and judge.ledger.entries == 0
    assert judge.admit(scale(1, 0)).allowed and judge.ledger.entries == 1
    refused = judge.admit(scale(2, 0))
    assert 'scale to zero of deployments "shop/web"' in refused.denials[0].message


def test_recording_failure_fails_closed(
    shipped_policy: policy.Policy, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = _engine(shipped_policy, clock, limit=5, window="1h")

    def broken(*_: object) -> None:
        raise OSError("disk")

    monkeypatch.setattr(judge.ledger, "charge", broken)
    verdict = judge.admit(_delete())
    assert not verdict.allowed and verdict.findings[0].error
    assert verdict.findings[0].message.startswith("[delete-budget] internal error while recording")


def test_policy_reload_keeps_the_budget(tmp_path: Path, clock: Clock) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    text = (reviews.RULES / "policy.yaml").read_text()
    (rules / "policy.yaml").write_text(text.replace("limit: 20", "limit: 1"))
    state = app.State(engine.compile_policy(rules, None), meters=metrics.Metrics())
    ledger = state.engine.ledger
    assert state.engine.admit(_delete("a")).allowed
    (rules / "policy.yaml").write_text(
        text.replace("limit: 20", "limit: 1").replace("window: 10m", "window: 20m")
    )
    assert asyncio.run(reload.PolicyReloader(rules, None, state).reload())
    assert state.engine.ledger is ledger
    refused = state.engine.admit(_delete("b"))
    assert "in the last 20m" in refused.denials[0].message  # new settings, old count


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("10x", "is not a duration"),
        ("0s", "longer than zero"),
        (-5, "longer than zero"),
        ("", "is not a duration"),
    ],
)
def test_bad_window_is_a_policy_error(tmp_path: Path, value: object, problem: str) -> None:
    text = (reviews.RULES / "policy.yaml").read_text().replace("window: 10m", f"window: {value!r}")
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(tmp_path)
    assert "policy.yaml: guards.delete-budget.window: " in str(caught.value)
    assert problem in str(caught.value)


def test_negative_limit_is_a_policy_error(tmp_path: Path) -> None:
    text = (reviews.RULES / "policy.yaml").read_text().replace("limit: 20", "limit: -1")
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(
        policy.PolicyError, match=r"guards\.delete-budget\.limit: Input should be greater than or equal to 0"
    ):
        policy.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600), ("1h30m", 5400), ("45s", 45), (90, 90), ("2h", 7200)]
)
def test_durations(text: object, seconds: float) -> None:
    assert budget.parse_duration(text) == seconds
    assert budget.parse_duration(budget.format_duration(seconds)) == seconds


def test_expired_keys_are_forgotten() -> None:
    ledger = budget.Ledger()
    for i in range(1000):
        ledger.charge((f"agent-{i}", "*"), f"uid-{i}", 5, 60, T0)
    assert ledger.keys == 1000 and ledger.entries == 1000
    ledger.charge(("late", "*"), "x", 5, 60, T0 + 61)  # 61 s later: the sweep runs
    assert ledger.keys == 1 and ledger.entries == 1


def test_a_key_never_holds_more_than_its_limit() -> None:
    ledger = budget.Ledger()
    for i in range(100):  # dry-run mode admits over the limit: the count stays bounded
        ledger.charge(("agent", "*"), f"uid-{i}", 5, 600, T0 + i)
    assert ledger.entries == 5
    assert ledger.spent(("agent", "*"), "", 600, T0 + 100).count == 5


def test_the_apiserver_sends_deletes_and_scale_updates() -> None:
    family = guards.by_id()["delete-budget"]
    operations = {op for rule in family.rules for op in rule.operations}
    assert operations == {"DELETE", "UPDATE"}
    assert any("*/scale" in rule.resources for rule in family.rules)
