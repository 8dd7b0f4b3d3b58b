"""Agent identity: ServiceAccount patterns, usernames, prefixes, groups, extra; and the CEL twin."""

from __future__ import annotations

import pytest

from webhook import attributes, identity, policy


def _user(username: str, *groups: str, **extra: list[str]) -> attributes.UserInfo:
    return attributes.UserInfo(username=username, groups=groups, extra=extra)


SELECTOR = policy.AgentSelector(
    service_accounts=("mcp-system/*", "tools/agent-*", "*/llm-runner"),
    usernames=("bot@example.com",),
    username_prefixes=("oidc:agent-",),
    groups=("agent-guard.io:agents",),
    extra=(policy.ExtraMatch(key="example.com/agent", value="true"),),
)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (_user("system:serviceaccount:mcp-system:mcp-k8s-go"), True),
        (_user("system:serviceaccount:mcp-system:x"), True),
        (_user("system:serviceaccount:mcp-system-old:x"), False),
        (_user("system:serviceaccount:tools:agent-7"), True),
        (_user("system:serviceaccount:tools:builder"), False),
        (_user("system:serviceaccount:team-a:llm-runner"), True),
        (_user("system:serviceaccount:team-a:llm-runner-2"), False),
        (_user("bot@example.com"), True),
        (_user("bot@example.com.evil"), False),
        (_user("oidc:agent-42"), True),
        (_user("oidc:human-42"), False),
        (_user("alice", "agent-guard.io:agents"), True),
        (_user("alice", "system:masters"), False),
        (_user("alice", **{"example.com/agent": ["true"]}), True),
        (_user("alice", **{"example.com/agent": ["false"]}), False),
        (_user("kubernetes-admin", "system:masters"), False),
    ],
)
def test_matcher(user: attributes.UserInfo, expected: bool) -> None:
    assert identity.Matcher(SELECTOR)(user) is expected


def test_wildcard_does_not_cross_the_namespace_separator() -> None:
    matcher = identity.Matcher(policy.AgentSelector(service_accounts=("mcp*/bot",)))
    assert matcher(_user("system:serviceaccount:mcp-system:bot"))
    assert not matcher(_user("system:serviceaccount:mcp:x:bot"))


def test_cel_admission_expression_covers_every_selector_kind() -> None:
    expression = identity.cel_expression(SELECTOR, "admission")
    assert 'request.userInfo.username.startsWith("system:serviceaccount:mcp-system:")' in expression
    assert 'request.userInfo.username.matches("^system:serviceaccount:tools:agent\\\\-[^:]*$")' in expression
    assert 'request.userInfo.username in ["bot@example.com"]' in expression
    assert 'request.userInfo.username.startsWith("oidc:agent-")' in expression
    assert "has(request.userInfo.groups) && request.userInfo.groups.exists(" in expression
    assert '"example.com/agent" in request.userInfo.extra' in expression


def test_cel_authorization_dialect_reads_the_sar_spec() -> None:
    expression = identity.cel_expression(SELECTOR, "authorization")
    assert "request.userInfo" not in expression
    assert 'request.user.startsWith("system:serviceaccount:mcp-system:")' in expression
    assert "has(request.groups) && request.groups.exists(" in expression


def test_exact_service_account_is_an_equality() -> None:
    selector = policy.AgentSelector(service_accounts=("mcp-system/mcp-k8s-go",))
    assert identity.cel_expression(selector, "admission") == (
        'request.userInfo.username == "system:serviceaccount:mcp-system:mcp-k8s-go"'
    )


def test_service_account_property() -> None:
    assert _user("system:serviceaccount:ns:name").service_account == ("ns", "name")
    assert _user("system:serviceaccount:ns").service_account is None
    assert _user("alice").service_account is None
