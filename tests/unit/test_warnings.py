"""Dry-run warnings: every guard message from the fixtures, shortened to the 120 characters
Kubernetes asks for, still says what would be denied and what to do instead, and cuts no word."""

from __future__ import annotations

import re

import pytest

from tests import reviews
from tests.unit import test_fixtures
from webhook import engine, policy, review


def _messages(shipped: policy.Policy) -> list[engine.Finding]:
    found: dict[str, engine.Finding] = {}
    for path in test_fixtures._fixture_files():
        if not path.name.startswith("deny."):
            continue
        data = test_fixtures._load(path)
        judge = test_fixtures._engine_for(shipped.with_mode("dry-run"), data)
        for finding in test_fixtures._judge(judge, data, data.get("user", reviews.AGENT)).findings:
            found.setdefault(finding.message, finding)
    return list(found.values())


def _cut_at_a_word_boundary(piece: str, original: str) -> bool:
    if not piece.endswith(review.ELLIPSIS):
        return piece == original
    kept = piece.removesuffix(review.ELLIPSIS)
    return original.startswith(kept) and original[len(kept)] in " ,;:"


def test_every_fixture_warning_keeps_the_advice_within_120(shipped_policy: policy.Policy) -> None:
    findings = _messages(shipped_policy)
    assert len(findings) > 50  # the fixtures really were judged
    for finding in findings:
        warning = review.warning_text(finding)
        prefix = f"[{finding.guard}] would deny: "
        assert warning.startswith(prefix) and len(warning) <= review.MAX_WARNING, warning
        body = finding.message.removeprefix(f"[{finding.guard}] ")
        if len(prefix + body) <= review.MAX_WARNING:
            assert warning == prefix + body
            continue
        head, advice = body.rsplit("; ", 1)
        advice = re.sub(r"^agents may [^:]*: ", "", advice)
        what, shown = warning.removeprefix(prefix).rsplit("; ", 1)
        assert _cut_at_a_word_boundary(shown, advice), (warning, advice)
        assert len(shown.removesuffix(review.ELLIPSIS)) >= min(len(advice), 30), warning
        assert head.startswith(what.removesuffix(review.ELLIPSIS)), warning
        assert _cut_at_a_word_boundary(what, head) or head[len(what) :].startswith(
            tuple(review.WHY_STARTS)
        ), warning


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("[g] short; fine", "[g] would deny: short; fine"),
        (
            "[g] deleting namespace " + '"x"' + " is not allowed for agents because " + "it " * 60 + "; ask",
            '[g] would deny: deleting namespace "x"; ask',
        ),
        ("[g] " + "word " * 40, "[g] would deny: " + ("word " * 20).strip() + review.ELLIPSIS),
    ],
)
def test_warning_shapes(message: str, expected: str) -> None:
    assert review.warning_text(engine.Finding("g", message, "dry-run")) == expected
