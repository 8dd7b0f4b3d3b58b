"""The generated parts of manifests/ are what the policy renders today (run `make manifests` if not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import reviews
from tests.manifests.conftest import MANIFESTS
from webhook import certs, manifests, policy

STALE = "stale: run `make manifests` and commit the result"


def test_webhook_configuration_in_base_is_fresh(shipped_policy: policy.Policy) -> None:
    expected = manifests.GENERATED + manifests.to_yaml(
        manifests.validating_webhook_configuration(
            shipped_policy, None, service=(certs.DEFAULT_SERVICE, certs.DEFAULT_NAMESPACE)
        )
    )
    assert (MANIFESTS / "base" / "webhook.yaml").read_text() == expected, STALE


def test_policy_copy_in_base_is_fresh() -> None:
    directory = MANIFESTS / "base" / "policy"
    expected = manifests.policy_kustomization(reviews.RULES)
    found = {p.name: p.read_text() for p in directory.iterdir() if p.is_file()}
    assert found == expected, STALE
    assert {n for n in expected if n != "kustomization.yaml"} == {
        f.name for f in policy.policy_files(reviews.RULES)
    }


def test_base_webhook_configuration_has_no_ca_bundle() -> None:
    [hook] = yaml.safe_load((MANIFESTS / "base" / "webhook.yaml").read_text())["webhooks"]
    assert "caBundle" not in hook["clientConfig"]  # filled by the tls-secret component or cert-manager


def test_broken_policy_is_never_rendered(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "policy.yaml").write_text("apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents: {}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "manifests", "policy", "--rules", str(rules), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=reviews.ROOT,
    )
    assert result.returncode == 1
    assert "nothing written" in result.stderr and "agents: no agent identities defined" in result.stderr
    assert not out.exists()


def test_manifests_policy_writes_every_file_and_removes_stale_ones(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for source in policy.policy_files(reviews.RULES):
        (rules / source.name).write_text(source.read_text())
    (rules / "extra.yml").write_text("apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n")
    out = tmp_path / "out"
    out.mkdir()
    (rules / "old.yaml").write_text("apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n")
    command = [
        sys.executable,
        "-m",
        "webhook",
        "manifests",
        "policy",
        "--rules",
        str(rules),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=reviews.ROOT)
    (rules / "old.yaml").unlink()  # its copy is now stale: the next run removes it
    subprocess.run(command, check=True, capture_output=True, cwd=reviews.ROOT)
    assert sorted(p.name for p in out.iterdir()) == ["extra.yml", "kustomization.yaml", "policy.yaml"]
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["extra.yml", "policy.yaml"]
    assert generator["namespace"] == certs.DEFAULT_NAMESPACE
    assert generator["options"]["disableNameSuffixHash"] is True


@pytest.mark.parametrize("with_bundle", [False, True])
def test_manifests_webhook_cli(with_bundle: bool, tmp_path: Path) -> None:
    certs.generate(tmp_path)
    bundle = certs.ca_bundle(tmp_path)
    flag = f"--ca-bundle={bundle}" if with_bundle else "--without-ca-bundle"
    out = tmp_path / "webhook.yaml"
    subprocess.run(
        [sys.executable, "-m", "webhook", "manifests", "webhook", flag, "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=reviews.ROOT,
    )
    text = out.read_text()
    assert text.startswith(manifests.GENERATED)
    [hook] = yaml.safe_load(text)["webhooks"]
    assert hook["clientConfig"].get("caBundle") == (bundle if with_bundle else None)
