"""Shared fixtures. End-to-end fixtures live in tests/e2e/conftest.py."""

from __future__ import annotations

import pytest

from tests import reviews
from webhook import engine, policy


@pytest.fixture(scope="session")
def shipped_policy() -> policy.Policy:
    return policy.load(reviews.RULES)


@pytest.fixture(scope="session")
def shipped_engine(shipped_policy: policy.Policy) -> engine.Engine:
    return engine.Engine(shipped_policy)
