"""Change detection and the policy swap, without a server (the real server is in tests/tls)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests import mounts, reviews
from webhook import app, attributes, engine, metrics, policy, reload, review

POLICY = (reviews.RULES / "policy.yaml").read_bytes()
OFF = POLICY.replace(b"namespace-delete: {}", b"namespace-delete: {mode: 'off'}")
BROKEN = POLICY.replace(b"namespace-delete: {}", b"namespace-delete: {mood: angry}")
OTHER_AGENTS = POLICY.replace(b'"mcp-system/*"', b'"other-system/*"')


def _agent_deletes_namespace() -> attributes.AdmissionRequest:
    return review.parse_admission(reviews.body(reviews.namespace_delete()))


def _changed(watch: reload.Watch) -> bool:
    return asyncio.run(watch.changed())


def test_kubelet_style_swap_is_a_change(tmp_path: Path) -> None:
    mounts.publish(tmp_path, {"policy.yaml": POLICY})
    watch = reload.Watch(lambda: policy.policy_files(tmp_path))
    assert not _changed(watch)
    mounts.publish(tmp_path, {"policy.yaml": POLICY})  # same bytes, new generation: nothing to do
    assert not _changed(watch)
    mounts.publish(tmp_path, {"policy.yaml": OFF})
    assert not _changed(watch)  # first sight
    assert _changed(watch)  # the same bytes one poll later: settled
    assert not _changed(watch)


def test_in_place_edit_and_new_files_are_changes(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_bytes(POLICY)
    watch = reload.Watch(lambda: policy.policy_files(tmp_path))
    (tmp_path / "policy.yaml").write_bytes(OFF)
    assert not _changed(watch) and _changed(watch)
    (tmp_path / "more.yaml").write_bytes(b"apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n")
    assert not _changed(watch) and _changed(watch)
    (tmp_path / "notes.txt").write_text("not a policy file")
    assert not _changed(watch) and not _changed(watch)


def test_a_file_still_being_written_is_not_taken_until_its_content_settles(tmp_path: Path) -> None:
    """A writer that pauses mid-file (longer than any fixed settle delay) is not caught half-way:
    the bytes must be the same at two consecutive polls."""
    target = tmp_path / "policy.yaml"
    target.write_bytes(POLICY)
    watch = reload.Watch(lambda: [target])
    with target.open("wb") as writer:
        for piece in (OFF[:100], OFF[100:300], OFF[300:]):
            writer.write(piece)
            writer.flush()
            assert not _changed(watch)  # every poll sees new bytes
    assert _changed(watch)
    assert watch.content == ((str(target), OFF),)


def test_deleted_file_is_a_change(tmp_path: Path) -> None:
    target = tmp_path / "tls.crt"
    target.write_text("x")
    watch = reload.Watch(lambda: [target])
    target.unlink()
    assert not _changed(watch) and _changed(watch)


@pytest.fixture
def state(tmp_path: Path) -> app.State:
    mounts.publish(tmp_path / "rules", {"policy.yaml": POLICY})
    return app.State(engine.Engine(policy.load(tmp_path / "rules")), meters=metrics.Metrics())


def _reload_count(state: app.State, result: str) -> float:
    value = state.metrics.registry.get_sample_value("agent_guard_policy_reloads_total", {"result": result})
    assert value is not None
    return value


def test_good_policy_is_swapped_in(state: app.State, tmp_path: Path) -> None:
    reloader = reload.PolicyReloader(tmp_path / "rules", None, state)
    before = state.engine
    assert not before.admit(_agent_deletes_namespace()).allowed
    mounts.publish(tmp_path / "rules", {"policy.yaml": OFF})
    assert asyncio.run(reloader.reload()) is True
    assert state.engine is not before
    assert state.engine.admit(_agent_deletes_namespace()).allowed
    assert _reload_count(state, "ok") == 1 and _reload_count(state, "failed") == 0


def test_forced_mode_survives_a_reload(state: app.State, tmp_path: Path) -> None:
    reloader = reload.PolicyReloader(tmp_path / "rules", "dry-run", state)
    assert asyncio.run(reloader.reload())
    verdict = state.engine.admit(_agent_deletes_namespace())
    assert verdict.allowed and verdict.decision == "would-deny"


def test_broken_policy_is_refused_and_the_last_good_one_stays(
    state: app.State, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = reload.PolicyReloader(tmp_path / "rules", None, state)
    before = state.engine
    mounts.publish(tmp_path / "rules", {"policy.yaml": BROKEN})
    with caplog.at_level(logging.ERROR, logger="agent-guard.reload"):
        assert asyncio.run(reloader.reload()) is False
    assert state.engine is before
    problem = f"{tmp_path / 'rules' / 'policy.yaml'}: guards.namespace-delete.mood: unknown field"
    assert problem in caplog.text and "last good policy stays in force" in caplog.text
    assert state.policy_error is not None and problem in state.policy_error
    assert _reload_count(state, "failed") == 1
    mounts.publish(tmp_path / "rules", {"policy.yaml": POLICY})
    assert asyncio.run(reloader.reload()) and state.policy_error is None


def test_routing_change_asks_for_a_new_webhook_configuration(
    state: app.State, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = reload.PolicyReloader(tmp_path / "rules", None, state)
    with caplog.at_level(logging.WARNING, logger="agent-guard.reload"):
        mounts.publish(
            tmp_path / "rules", {"policy.yaml": POLICY.replace(b"mode: enforce", b"mode: dry-run")}
        )
        asyncio.run(reloader.reload())
        assert "ValidatingWebhookConfiguration" not in caplog.text  # modes do not change routing
        mounts.publish(tmp_path / "rules", {"policy.yaml": OTHER_AGENTS})
        asyncio.run(reloader.reload())
    assert "re-render and apply the ValidatingWebhookConfiguration" in caplog.text


def test_reload_reports_a_lapsed_exemption_like_a_start(
    state: app.State, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lapsed = (
        b"apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nexemptions:\n"
        b"  - {guard: namespace-delete, serviceAccount: mcp-system/mcp-k8s-go, namespace: old,"
        b" reason: a finished migration, expires: 2000-01-01}\n"
    )
    reloader = reload.PolicyReloader(tmp_path / "rules", None, state)
    mounts.publish(tmp_path / "rules", {"policy.yaml": POLICY, "exemptions.yaml": lapsed})
    with caplog.at_level(logging.WARNING, logger="agent-guard.engine"):
        assert asyncio.run(reloader.reload())
    assert "EXPIRED on 2000-01-01" in caplog.text


def test_a_slow_non_atomic_write_never_loads_a_weaker_prefix(state: app.State, tmp_path: Path) -> None:
    """The policy is rewritten in place by a writer that pauses after the serviceAccounts line, for
    less than one reload interval. That prefix is a valid policy which no longer knows the agents'
    group; the old fixed 0.2 s settle delay loaded it. Settling by content never does."""
    target = tmp_path / "rules" / "policy.yaml"
    target.unlink()  # an ordinary file, edited in place, instead of the kubelet's symlinks
    target.write_bytes(POLICY)
    reloader = reload.PolicyReloader(tmp_path / "rules", None, state)
    group_agent = review.parse_admission(
        reviews.body(
            reviews.namespace_delete(user={"username": "alice", "groups": ["agent-guard.io:agents"]})
        )
    )
    prefix = POLICY[: POLICY.index(b"  groups:")]
    (tmp_path / "prefix.yaml").write_bytes(prefix)
    weaker = engine.Engine(policy.load(tmp_path / "prefix.yaml"))
    assert weaker.admit(group_agent).allowed  # what loading the prefix would do

    with target.open("wb") as writer:
        writer.write(prefix)
        writer.flush()
        asyncio.run(reloader.poll())  # the writer pauses here
        assert not state.engine.admit(group_agent).allowed
        writer.write(POLICY[len(prefix) :])
    asyncio.run(reloader.poll())  # new bytes again: not settled
    assert not state.engine.admit(group_agent).allowed
    assert _reload_count(state, "ok") == 0 and _reload_count(state, "failed") == 0
    asyncio.run(reloader.poll())  # settled: the whole file, and it denies
    assert not state.engine.admit(group_agent).allowed
    assert _reload_count(state, "ok") == 0  # the same bytes as the policy in force: nothing to reload
