"""Reading the kubeconfig of ``make e2e-kind`` (the e2e suite's existing-cluster mode), without a cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import cluster, kubeconfig


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kind_style(
    user: dict[str, Any] | None = None, cluster_fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What ``kind get kubeconfig`` writes: inline CA and client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kind-agent-guard-e2e",
        "contexts": [
            {"name": "kind-agent-guard-e2e", "context": {"cluster": "kind-e2e", "user": "kind-admin"}},
            {"name": "other", "context": {"cluster": "elsewhere", "user": "nobody"}},
        ],
        "clusters": [
            {
                "name": "kind-e2e",
                "cluster": {
                    "server": "https://127.0.0.1:45678",
                    "certificate-authority-data": b64("CA PEM"),
                    **(cluster_fields or {}),
                },
            }
        ],
        "users": [
            {
                "name": "kind-admin",
                "user": user
                or {"client-certificate-data": b64("CERT PEM"), "client-key-data": b64("KEY PEM")},
            }
        ],
    }


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_kind_kubeconfig_gives_server_ca_and_client_certificate(tmp_path: Path) -> None:
    found = kubeconfig.load(write(tmp_path, kind_style()), tmp_path / "work")
    assert found.server == "https://127.0.0.1:45678" and found.context == "kind-agent-guard-e2e"
    assert found.ca_file.read_text() == "CA PEM"
    assert found.admin_token == ""
    assert found.admin_client_cert is not None
    cert, key = found.admin_client_cert
    assert (cert.read_text(), key.read_text()) == ("CERT PEM", "KEY PEM")
    assert key.stat().st_mode & 0o777 == 0o600
    assert found.guard_in_cluster and found.audit_log is None


def test_token_and_file_paths_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("CA")
    config = kind_style({"tokenFile": "token"})
    config["clusters"][0]["cluster"] = {"server": "https://k:6443/", "certificate-authority": "ca.crt"}
    (tmp_path / "token").write_text("s3cret\n")
    found = kubeconfig.load(write(tmp_path, config), tmp_path / "work")
    assert found.ca_file == tmp_path / "ca.crt" and found.server == "https://k:6443"
    assert found.admin_token == "s3cret" and found.admin_client_cert is None


def test_a_kubeconfig_target_never_offers_a_local_guard_url(tmp_path: Path) -> None:
    found = kubeconfig.load(write(tmp_path, kind_style()), tmp_path / "work")
    with pytest.raises(kubeconfig.NoLocalGuard, match="runs in the cluster"):
        found.guard_url(8443)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (kind_style({"exec": {"command": "aws"}}), "authenticates with exec"),
        (kind_style({"token": ""}), "neither a token nor a client certificate"),
        (kind_style({"client-certificate-data": b64("C")}), "needs both client-certificate and client-key"),
        (kind_style(None, {"insecure-skip-tls-verify": True}), "skips TLS verification"),
        (kind_style(None, {"certificate-authority-data": "not base64!"}), "is not base64"),
        ({**kind_style(), "current-context": "missing"}, "no context named 'missing'"),
        ({**kind_style(), "current-context": ""}, "no current-context"),
    ],
)
def test_unusable_kubeconfigs_say_why(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match=message):
        kubeconfig.load(write(tmp_path, config), tmp_path / "work")


def test_the_suite_reports_a_missing_kubeconfig_as_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cluster.KUBECONFIG_ENV, str(tmp_path / "absent"))
    assert cluster.mode() == "kubeconfig" and not cluster.needs_binaries()
    with (
        pytest.raises(cluster.Unavailable, match="make e2e-kind writes"),
        cluster.provide(tmp_path, {}, tmp_path / "authz.yaml"),
    ):
        pass
