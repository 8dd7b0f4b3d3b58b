"""The authorizer's kube-apiserver files: AuthorizationConfiguration + kubeconfig, rendered from the policy.

The field names below are those of k8s.io/apiserver/pkg/apis/apiserver/v1 (types.go), which the
apiserver decodes strictly: an unknown or misspelt field stops it from starting.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client
from kubernetes.config import kube_config

from tests import reviews
from webhook import certs, cli, identity, manifests, policy

COMMITTED = reviews.ROOT / "manifests" / "authz"
RERENDER = ["manifests", "authz", "--ca-file", manifests.DEFAULT_CA_FILE]

# json tags of WebhookConfiguration / WebhookConnectionInfo / WebhookMatchCondition (apiserver v1)
WEBHOOK_FIELDS = {
    "authorizedTTL",
    "cacheAuthorizedRequests",
    "unauthorizedTTL",
    "cacheUnauthorizedRequests",
    "timeout",
    "subjectAccessReviewVersion",
    "matchConditionSubjectAccessReviewVersion",
    "failurePolicy",
    "connectionInfo",
    "matchConditions",
}


def _seconds(duration: str) -> float:
    """A Go duration of the simple form the renderer writes (``3s``, ``5m``, ``1m30s``)."""
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * scale[u] for n, u in parts)


def _webhook(config: dict[str, Any]) -> dict[str, Any]:
    [hook] = [a for a in config["authorizers"] if a["type"] == "Webhook"]
    webhook: dict[str, Any] = hook["webhook"]
    return webhook


def test_chain_is_node_then_guard_then_rbac(shipped_policy: policy.Policy) -> None:
    config = manifests.authorization_configuration(shipped_policy)
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
    assert config["kind"] == "AuthorizationConfiguration"
    # non-webhook authorizers must be named after their mode, lower case (kube-apiserver checks it)
    assert [(a["type"], a["name"]) for a in config["authorizers"]] == [
        ("Node", "node"),
        ("Webhook", "agent-guard"),
        ("RBAC", "rbac"),
    ]
    assert all(a.keys() == {"type", "name"} for a in config["authorizers"] if a["type"] != "Webhook")


def test_webhook_settings_are_valid_and_fail_closed(shipped_policy: policy.Policy) -> None:
    webhook = _webhook(manifests.authorization_configuration(shipped_policy))
    assert webhook.keys() <= WEBHOOK_FIELDS
    assert webhook["failurePolicy"] == "Deny"  # the enum is exactly NoOpinion | Deny
    assert webhook["subjectAccessReviewVersion"] == "v1"
    assert webhook["matchConditionSubjectAccessReviewVersion"] == "v1"
    assert 0 < _seconds(webhook["timeout"]) <= 30  # the apiserver refuses more than 30s
    assert _seconds(webhook["authorizedTTL"]) > 0 and _seconds(webhook["unauthorizedTTL"]) > 0
    assert _seconds(webhook["unauthorizedTTL"]) <= 30, "a stopped guard or a policy change shows quickly"
    assert webhook["cacheAuthorizedRequests"] is False and webhook["cacheUnauthorizedRequests"] is True
    assert webhook["connectionInfo"] == {
        "type": "KubeConfigFile",
        "kubeConfigFile": manifests.DEFAULT_KUBECONFIG_PATH,
    }


def test_files_take_a_shorter_cache_ttl(shipped_policy: policy.Policy) -> None:
    """The end-to-end harness renders 1s so that a restarted guard is asked again at once."""
    files = manifests.authorization_files(shipped_policy, ca_bundle="Q0E=", unauthorized_ttl="1s")
    webhook = _webhook(yaml.safe_load(files[manifests.CONFIG_FILE]))
    assert webhook["unauthorizedTTL"] == "1s"
    shipped = manifests.authorization_files(shipped_policy, ca_bundle="Q0E=")
    assert _webhook(yaml.safe_load(shipped[manifests.CONFIG_FILE]))["unauthorizedTTL"] == "10s"


def test_match_conditions_come_from_the_policy_agents(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
        "agents: {serviceAccounts: ['bots/*'], usernames: ['llm@example.com']}\n"
    )
    loaded = policy.load(rules)
    webhook = _webhook(manifests.authorization_configuration(loaded))
    # WebhookMatchCondition has no name field: strict decoding would reject one
    assert webhook["matchConditions"] == [
        {"expression": identity.cel_expression(loaded.agents, "authorization")}
    ]
    expression = webhook["matchConditions"][0]["expression"]
    assert 'request.user.startsWith("system:serviceaccount:bots:")' in expression
    assert '"llm@example.com"' in expression and "mcp-system" not in expression
    assert "userInfo" not in expression  # the SubjectAccessReview spec, not an AdmissionRequest


def test_kubeconfig_path_must_be_absolute(shipped_policy: policy.Policy, capsys: Any) -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        manifests.authorization_configuration(shipped_policy, kubeconfig_path="authz-kubeconfig.yaml")
    code = cli.main([*RERENDER, "--rules", str(reviews.RULES), "--kubeconfig-path", "relative.yaml"])
    assert code == 2 and "must be absolute" in capsys.readouterr().err


def _load_kubeconfig(document: dict[str, Any]) -> kube_client.Configuration:
    """Load the kubeconfig with the kubernetes client's own loader (a real consumer of the format)."""
    configuration = kube_client.Configuration()
    loader = kube_config.KubeConfigLoader(config_dict=document)  # type: ignore[no-untyped-call]
    loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    return configuration


def test_kubeconfig_embeds_the_ca_and_points_at_authorize(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    bundle = certs.ca_bundle(tmp_path)
    document = manifests.authorization_kubeconfig("https://10.0.0.5:8443/", ca_bundle=bundle)
    loaded = _load_kubeconfig(document)
    assert loaded.host == "https://10.0.0.5:8443/authorize"
    assert isinstance(loaded.ssl_ca_cert, str)
    assert (
        Path(loaded.ssl_ca_cert).read_bytes()
        == base64.b64decode(bundle)
        == (tmp_path / "ca.crt").read_bytes()
    )


def test_kubeconfig_can_reference_a_ca_file() -> None:
    document = manifests.authorization_kubeconfig("https://127.0.0.1:8443", ca_file="/etc/x/ca.crt")
    [cluster] = document["clusters"]
    assert cluster["cluster"] == {
        "server": "https://127.0.0.1:8443/authorize",
        "certificate-authority": "/etc/x/ca.crt",
    }
    with pytest.raises(ValueError, match="exactly one"):
        manifests.authorization_kubeconfig("https://x", ca_bundle="QQ==", ca_file="/ca.crt")
    with pytest.raises(ValueError, match="exactly one"):
        manifests.authorization_kubeconfig("https://x")
    with pytest.raises(ValueError, match="https://"):
        manifests.authorization_kubeconfig("http://127.0.0.1:8443", ca_file="/ca.crt")


def test_kubeconfig_names_the_service_when_dialing_a_cluster_ip() -> None:
    """The self-managed install (docs/deploy.md): the apiserver dials a fixed ClusterIP and verifies
    the Service's DNS name, which is what the guard's certificate carries."""
    document = manifests.authorization_kubeconfig(
        "https://10.96.0.250", ca_file="/ca.crt", tls_server_name="agent-guard.agent-guard-system.svc"
    )
    [cluster] = document["clusters"]
    assert cluster["cluster"]["tls-server-name"] == "agent-guard.agent-guard-system.svc"
    plain = manifests.authorization_kubeconfig("https://10.96.0.250", ca_file="/ca.crt")
    assert "tls-server-name" not in plain["clusters"][0]["cluster"]


def test_cli_writes_both_files_for_an_apiserver(tmp_path: Path, capsys: Any) -> None:
    certs.generate(tmp_path / "certs")
    out = tmp_path / "authz"
    kubeconfig_path = str(out / manifests.KUBECONFIG_FILE)
    code = cli.main(
        [
            "manifests",
            "authz",
            "--rules",
            str(reviews.RULES),
            "--cert-dir",
            str(tmp_path / "certs"),
            "--url",
            "https://127.0.0.1:19443",
            "--kubeconfig-path",
            kubeconfig_path,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert f"--authorization-config={out / manifests.CONFIG_FILE}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted([manifests.CONFIG_FILE, manifests.KUBECONFIG_FILE])
    config = yaml.safe_load((out / manifests.CONFIG_FILE).read_text())
    assert _webhook(config)["connectionInfo"]["kubeConfigFile"] == kubeconfig_path
    kubeconfig = yaml.safe_load((out / manifests.KUBECONFIG_FILE).read_text())
    assert _load_kubeconfig(kubeconfig).host == "https://127.0.0.1:19443/authorize"
    assert kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"] == certs.ca_bundle(
        tmp_path / "certs"
    )


def test_cli_prints_both_documents_without_out(tmp_path: Path, capsys: Any) -> None:
    certs.generate(tmp_path)
    bundle = certs.ca_bundle(tmp_path)
    code = cli.main(["manifests", "authz", "--rules", str(reviews.RULES), "--ca-bundle", bundle])
    assert code == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["AuthorizationConfiguration", "Config"]
    assert documents[1]["clusters"][0]["cluster"]["certificate-authority-data"] == bundle


def test_cli_without_a_ca_says_what_to_do(tmp_path: Path, capsys: Any) -> None:
    code = cli.main(["manifests", "authz", "--rules", str(reviews.RULES), "--cert-dir", str(tmp_path)])
    assert code == 1
    assert "cannot read the CA" in capsys.readouterr().err


def test_cli_reports_an_invalid_policy(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents: {}\n")
    assert cli.main(["manifests", "authz", "--rules", str(tmp_path), "--ca-file", "/ca.crt"]) == 1
    assert "no agent identities defined" in capsys.readouterr().err


def test_committed_manifests_match_the_renderer(tmp_path: Path) -> None:
    assert cli.main([*RERENDER, "--rules", str(reviews.RULES), "--out", str(tmp_path)]) == 0
    rendered = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.yaml")}
    assert committed == rendered, (
        f"manifests/authz/ is stale: re-render with `agent-guard {' '.join(RERENDER)} --out manifests/authz`"
    )


def test_kubeconfig_can_carry_the_apiservers_client_certificate(
    shipped_policy: policy.Policy, capsys: Any, tmp_path: Path
) -> None:
    """For ``serve --client-ca``: the authorizer must present the same certificate as admission."""
    files = manifests.authorization_files(
        shipped_policy,
        ca_bundle="Q0E=",
        client_cert=("/etc/k/apiserver-client.crt", "/etc/k/apiserver-client.key"),
    )
    [user] = yaml.safe_load(files[manifests.KUBECONFIG_FILE])["users"]
    assert user["user"] == {
        "client-certificate": "/etc/k/apiserver-client.crt",
        "client-key": "/etc/k/apiserver-client.key",
    }
    plain = manifests.authorization_files(shipped_policy, ca_bundle="Q0E=")
    assert yaml.safe_load(plain[manifests.KUBECONFIG_FILE])["users"][0]["user"] == {}
    certs.generate(tmp_path)
    code = cli.main(
        ["manifests", "authz", "--ca-bundle", certs.ca_bundle(tmp_path), "--client-cert", "/x.crt"]
    )
    assert code == 2 and "give both --client-cert and --client-key" in capsys.readouterr().err
