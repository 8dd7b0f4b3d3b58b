"""The guard registry is an object passed in: policy loading, the engine and manifest rendering use
the families they are given, and discovery refuses a guard package with a module that is not one."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import probe, reviews
from webhook import attributes, engine, guards, manifests, policy
from webhook.guards import base

FAMILY_MODULE = """
from webhook.guards import base

class Settings(base.GuardSettings):
    pass

FAMILY = base.Family(id={id!r}, summary="test", settings=Settings, admission=lambda *_: iter(()))
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable, empty guard package ``fakeguards`` (removed from sys.modules afterwards)."""
    root = tmp_path / "fakeguards"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "fakeguards" or m.startswith("fakeguards.")]:
        del sys.modules[name]
    guards.discover.cache_clear()
    importlib.invalidate_caches()


def test_discovery_registers_every_family_module(package: Path) -> None:
    (package / "alpha.py").write_text(FAMILY_MODULE.format(id="alpha-guard"))
    (package / "beta.py").write_text(FAMILY_MODULE.format(id="beta"))
    assert [f.id for f in guards.discover("fakeguards")] == ["alpha-guard", "beta"]


def test_a_module_without_family_fails_loudly(package: Path) -> None:
    (package / "alpha.py").write_text(FAMILY_MODULE.format(id="alpha"))
    (package / "helpers.py").write_text("def shared() -> None: ...\n")
    with pytest.raises(ImportError, match=r"fakeguards\.helpers defines no FAMILY"):
        guards.discover("fakeguards")


@pytest.mark.parametrize(
    ("ids", "problem"), [(("alpha", "alpha"), "defined twice"), (("Alpha_1",), "lowercase-with-dashes")]
)
def test_bad_ids_name_the_module(package: Path, ids: tuple[str, ...], problem: str) -> None:
    for index, guard_id in enumerate(ids):
        (package / f"m{index}.py").write_text(FAMILY_MODULE.format(id=guard_id))
    with pytest.raises(ImportError, match=rf"fakeguards\.m{len(ids) - 1}\.FAMILY: .*{problem}"):
        guards.discover("fakeguards")


def test_the_shipped_package_holds_only_families() -> None:
    shipped = guards.discover()
    assert len(shipped) >= 6 and list(shipped.by_id) == sorted(shipped.by_id)
    assert not (Path(guards.__file__).parent / "podspec.py").exists()  # helpers live outside


def test_policy_engine_and_manifests_use_the_families_passed_in() -> None:
    registry = probe.registry()
    loaded = policy.load(reviews.RULES, families=registry)
    assert loaded.families is registry and "probe" in loaded.guards
    request = attributes.AccessRequest(
        attributes.UserInfo("system:serviceaccount:mcp-system:mcp-k8s-go"),
        "get",
        resource="configmaps",
        namespace="probe-a",
        name="x",
    )
    assert engine.Engine(loaded).authorize(request).guards == ("probe",)
    assert engine.Engine(policy.load(reviews.RULES)).authorize(request).guards == ()
    # a family with admission rules shows up in the rendered webhook rules only when registered
    extra = base.Family(
        id="widgets",
        summary="test",
        settings=probe.Settings,
        admission=lambda *_: iter(()),
        rules=(base.AdmissionRule(("example.com",), ("widgets",), ("CREATE",)),),
    )
    rendered = manifests.admission_rules(policy.load(reviews.RULES, families=registry.with_families(extra)))
    assert any(rule["resources"] == ["widgets"] for rule in rendered)
    assert not any("widgets" in rule["resources"] for rule in manifests.admission_rules(loaded))


def test_a_policy_section_for_an_unregistered_family_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text((reviews.RULES / "policy.yaml").read_text())
    (tmp_path / "probe.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nguards:\n  probe: {mode: dry-run}\n"
    )
    assert policy.load(tmp_path, families=probe.registry()).mode_of("probe") == "dry-run"
    with pytest.raises(policy.PolicyError, match=r"guards\.probe: unknown guard id"):
        policy.load(tmp_path)
