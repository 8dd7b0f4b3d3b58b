"""Is this caller an agent?

The same selector drives two things that must never disagree: the Python matcher used on every
review, and the CEL ``matchConditions`` rendered into the webhook configurations (so the apiserver
never even calls the guard for humans and controllers). Both are built here from one translation of
the policy's patterns.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from webhook import attributes, policy

Dialect = Literal["admission", "authorization"]


def _pattern_regex(pattern: str) -> str:
    """A ServiceAccount name pattern as an anchored-free regex: ``*`` matches within one segment."""
    return "[^:]*".join(re.escape(part) for part in pattern.split("*"))


def _service_account_regex(item: str) -> str:
    namespace, _, name = item.partition("/")
    return f"{re.escape(attributes.SA_PREFIX)}{_pattern_regex(namespace)}:{_pattern_regex(name)}"


class Matcher:
    """Compiled form of a policy's ``agents`` selector; cheap to call on every request."""

    __slots__ = ("_extra", "_groups", "_prefixes", "_service_accounts", "_usernames", "selector")

    def __init__(self, selector: policy.AgentSelector) -> None:
        self.selector = selector
        sa = "|".join(f"(?:{_service_account_regex(item)})" for item in selector.service_accounts)
        self._service_accounts = re.compile(sa) if sa else None
        self._usernames = frozenset(selector.usernames)
        self._prefixes = selector.username_prefixes
        self._groups = frozenset(selector.groups)
        self._extra = tuple((match.key, match.value) for match in selector.extra)

    def __call__(self, user: attributes.UserInfo) -> bool:
        name = user.username
        if name in self._usernames:
            return True
        if self._service_accounts is not None and self._service_accounts.fullmatch(name):
            return True
        if self._prefixes and name.startswith(self._prefixes):
            return True
        if self._groups and not self._groups.isdisjoint(user.groups):
            return True
        return any(value in user.extra.get(key, ()) for key, value in self._extra)


def _cel_string(value: str) -> str:
    # JSON string escaping is valid CEL string-literal escaping for the characters names contain.
    return json.dumps(value)


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_cel_string(v) for v in values) + "]"


def cel_expression(selector: policy.AgentSelector, dialect: Dialect) -> str:
    """One CEL expression that is true exactly for the selector's agents.

    ``admission`` reads ``request.userInfo`` (AdmissionRequest); ``authorization`` reads the
    SubjectAccessReview spec (``request.user``, ``request.groups``, ``request.extra``).
    """
    if dialect == "admission":
        user, groups, extra = "request.userInfo.username", "request.userInfo.groups", "request.userInfo.extra"
        has_groups, has_extra = "has(request.userInfo.groups)", "has(request.userInfo.extra)"
    else:
        user, groups, extra = "request.user", "request.groups", "request.extra"
        has_groups, has_extra = "has(request.groups)", "has(request.extra)"
    clauses: list[str] = []
    if selector.usernames:
        clauses.append(f"{user} in {_cel_list(selector.usernames)}")
    for item in selector.service_accounts:
        namespace, _, name = item.partition("/")
        if "*" not in namespace and name == "*":
            prefix = f"{attributes.SA_PREFIX}{namespace}:"
            clauses.append(f"{user}.startsWith({_cel_string(prefix)})")
        elif "*" not in item:
            clauses.append(f"{user} == {_cel_string(f'{attributes.SA_PREFIX}{namespace}:{name}')}")
        else:
            clauses.append(f"{user}.matches({_cel_string('^' + _service_account_regex(item) + '$')})")
    clauses.extend(f"{user}.startsWith({_cel_string(p)})" for p in selector.username_prefixes)
    if selector.groups:
        clauses.append(f"({has_groups} && {groups}.exists(g, g in {_cel_list(selector.groups)}))")
    for match in selector.extra:
        key = _cel_string(match.key)
        clauses.append(f"({has_extra} && {key} in {extra} && {_cel_string(match.value)} in {extra}[{key}])")
    return " || ".join(clauses) if clauses else "false"
