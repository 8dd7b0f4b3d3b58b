"""What ``agent-guard manifests --kubernetes-version`` renders differently by release.

The field sets come from k8s.io/apiserver/pkg/apis/apiserver/<version>/types.go of each release
(the apiserver decodes the file strictly: an unknown field stops it); the e2e version matrix
(make e2e-matrix) starts each release's kube-apiserver with these files.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests import reviews
from tests.e2e.controlplane import binaries
from webhook import manifests, policy

CACHE_FIELDS = {"cacheAuthorizedRequests", "cacheUnauthorizedRequests"}


def _webhook(config: dict[str, object]) -> dict[str, object]:
    authorizers = config["authorizers"]
    assert isinstance(authorizers, list)
    [hook] = [a for a in authorizers if a["type"] == "Webhook"]
    webhook: dict[str, object] = hook["webhook"]
    return webhook


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.30", (1, 30)), ("v1.32.13", (1, 32)), ("1.37.2", (1, 37)), ("v1.34.0-rc.1", (1, 34))],
)
def test_versions_parse(text: str, expected: tuple[int, int]) -> None:
    assert manifests.kubernetes_version(text) == expected


@pytest.mark.parametrize("text", ["1.29", "1.2", "banana", "1", ""])
def test_unsupported_or_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not supported|not a Kubernetes version"):
        manifests.kubernetes_version(text)


@pytest.mark.parametrize(
    ("version", "api_version", "cache_fields"),
    [
        ((1, 30), "apiserver.config.k8s.io/v1beta1", False),
        ((1, 31), "apiserver.config.k8s.io/v1beta1", False),
        ((1, 32), "apiserver.config.k8s.io/v1", False),
        ((1, 33), "apiserver.config.k8s.io/v1", False),
        ((1, 34), "apiserver.config.k8s.io/v1", True),
        ((1, 37), "apiserver.config.k8s.io/v1", True),
        (None, "apiserver.config.k8s.io/v1", True),
    ],
)
def test_authorization_configuration_by_release(
    shipped_policy: policy.Policy, version: tuple[int, int] | None, api_version: str, cache_fields: bool
) -> None:
    config = manifests.authorization_configuration(shipped_policy, kubernetes=version)
    assert config["apiVersion"] == api_version
    webhook = _webhook(config)
    assert (webhook.keys() >= CACHE_FIELDS) is cache_fields
    assert webhook["failurePolicy"] == "Deny" and webhook["matchConditions"]


def test_cli_renders_for_the_release_and_refuses_old_ones() -> None:
    command = [
        sys.executable,
        "-m",
        "webhook",
        "manifests",
        "authz",
        "--ca-file",
        "/etc/kubernetes/agent-guard/ca.crt",
    ]
    result = subprocess.run(
        [*command, "--kubernetes-version", "1.31"],
        capture_output=True,
        text=True,
        check=True,
        cwd=reviews.ROOT,
    )
    config = next(yaml.safe_load_all(result.stdout))
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1beta1"
    old = subprocess.run(
        [*command, "--kubernetes-version", "1.29"],
        capture_output=True,
        text=True,
        check=False,
        cwd=reviews.ROOT,
    )
    assert old.returncode == 2 and "Kubernetes 1.29 is not supported" in old.stderr
    assert "Traceback" not in old.stderr


def test_matrix_pins_one_module_per_release() -> None:
    """Each matrix entry's go.mod pins that minor (and its staging modules) for the e2e suite."""
    for minor, directory in binaries.MATRIX.items():
        version = binaries.kube_apiserver(minor).version
        assert version.startswith(f"v{minor}."), (minor, version)
        staging = (directory / "go.mod").read_text()
        assert f"k8s.io/api => k8s.io/api v0.{version.removeprefix('v1.')}" in staging
        assert manifests.kubernetes_version(minor) >= manifests.OLDEST_KUBERNETES


def test_unknown_matrix_release_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(binaries.KUBERNETES_ENV, "1.99")
    with pytest.raises(binaries.UnknownVersion, match=r"AGENT_GUARD_E2E_KUBERNETES=1\.99: the matrix pins"):
        binaries.kube_apiserver()
