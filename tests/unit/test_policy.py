"""Policy loading: a good file loads; each kind of bad file names file, field and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import reviews
from webhook import guards, policy

HEADER = "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
AGENTS = "agents:\n  serviceAccounts: ['mcp-system/*']\n"


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_policy_loads_with_every_guard() -> None:
    loaded = policy.load(reviews.RULES)
    assert loaded.mode == "enforce"
    assert set(loaded.guards) == {f.id for f in guards.families()}
    assert loaded.agents.service_accounts == ("mcp-system/*",)
    assert "agent-guard.io:agents" in loaded.agents.groups
    assert loaded.guard_namespace == "agent-guard-system"


def test_mode_override_and_per_guard_mode(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + AGENTS + "mode: enforce\nguards:\n  namespace-delete: {mode: dry-run}\n")
    loaded = policy.load(path)
    assert loaded.mode_of("namespace-delete") == "dry-run"
    assert policy.load(path, mode="dry-run").mode == "dry-run"


def test_command_line_mode_overrides_guard_modes_but_not_off(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + AGENTS + "guards:\n  namespace-delete: {mode: enforce}\n")
    assert policy.load(path, mode="dry-run").mode_of("namespace-delete") == "dry-run"
    off = _write(tmp_path, HEADER + AGENTS + "guards:\n  namespace-delete: {mode: off}\n", "off.yaml")
    assert policy.load(off, mode="enforce").mode_of("namespace-delete") == "off"


def test_guard_without_own_mode_follows_global(tmp_path: Path) -> None:
    loaded = policy.load(_write(tmp_path, HEADER + AGENTS + "mode: dry-run\n"))
    assert loaded.mode_of("namespace-delete") == "dry-run"


def test_sections_split_across_files_are_merged(tmp_path: Path) -> None:
    _write(tmp_path, HEADER + AGENTS, "a.yaml")
    _write(tmp_path, HEADER + "mode: dry-run\nguards:\n  namespace-delete: {mode: off}\n", "b.yml")
    loaded = policy.load(tmp_path)
    assert loaded.mode == "dry-run"
    assert loaded.mode_of("namespace-delete") == "off"
    assert len(loaded.sources) == 2


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (HEADER + AGENTS + "mood: enforce\n", "mood", "unknown field"),
        (HEADER + AGENTS + "mode: block\n", "mode", "'enforce' or 'dry-run'"),
        (HEADER + AGENTS + "guards:\n  namespace-delet: {}\n", "guards.namespace-delet", "unknown guard id"),
        (
            HEADER + AGENTS + "guards:\n  namespace-delete: {mode: loud}\n",
            "guards.namespace-delete.mode",
            "'off'",
        ),
        (
            HEADER + AGENTS + "guards:\n  namespace-delete: {colour: red}\n",
            "guards.namespace-delete.colour",
            "unknown field",
        ),
        (
            HEADER + "agents:\n  serviceAccounts: ['mcp-system']\n",
            "agents.serviceAccounts",
            "must be 'namespace/name'",
        ),
        (HEADER + "agents:\n  groups: 'x'\n", "agents.groups", "tuple"),
        (HEADER + "agents: {}\n", "agents", "no agent identities"),
        ("apiVersion: v1\nkind: Policy\n" + AGENTS, "apiVersion", "agent-guard.io/v1alpha1"),
        ("kind: Policy\n" + AGENTS, "apiVersion", "Field required"),
        (HEADER + AGENTS + "agents:\n  groups: [x]\n", "line", "invalid YAML"),
        ("- just\n- a list\n", "(document)", "expected a mapping"),
        (HEADER + "agents:\n  extra: [{key: k}]\n", "agents.extra.0.value", "Field required"),
    ],
)
def test_bad_policy_names_file_field_and_problem(tmp_path: Path, text: str, field: str, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert field in message and problem in message, message


def test_duplicate_section_across_files_names_both(tmp_path: Path) -> None:
    first = _write(tmp_path, HEADER + AGENTS + "mode: enforce\n", "a.yaml")
    second = _write(tmp_path, HEADER + "mode: dry-run\n", "b.yaml")
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(tmp_path)
    assert f"{second}: mode: already set in {first}" in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + AGENTS + "mode: x\nfoo: 1\n")
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path)
    assert len(caught.value.problems) == 2


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(policy.PolicyError, match=r"no \*\.yaml policy files"):
        policy.load(tmp_path)
    with pytest.raises(policy.PolicyError, match="no such file"):
        policy.load(tmp_path / "nope.yaml")
