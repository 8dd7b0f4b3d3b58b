"""The Helm chart installs what the kustomize overlays install, and its values do what they say.

``helm template`` of the chart and ``kustomize build`` of each overlay are compared object by object
(every field of every object; the only difference allowed is the four labels helm adds, which must
be there). The chart computes the webhook's rules and matchConditions from the policy in its values
at install time, so those are compared with the guard's own renderer
(``manifests.validating_webhook_configuration``) for the shipped policy and for several others.
helm is built from the Go module proxy (``helm_binary``); without Go the tests skip locally and fail
under CI.

The CEL strings are compared as text, so the variants use ASCII names without ``<``, ``>`` and ``&``:
for those helm's ``toJson`` writes ``<`` as ``\u003c`` and Python's ``json.dumps`` writes ``é`` as
``\u00e9``, which CEL reads as the same string but this comparison would not.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.manifests import helm_binary
from tests.manifests.conftest import MANIFESTS, OVERLAYS, TLS_COMPONENT_CERTS, Documents
from webhook import certs, chart, cli, manifests, policy

CHART = reviews.ROOT / "charts" / "kube-agent-guard"
NAMESPACE = certs.DEFAULT_NAMESPACE
RELEASE = "agent-guard"
HELM_LABELS = frozenset(
    {
        "helm.sh/chart",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
    }
)
Key = tuple[str, str]


def tls_values(tree: Path) -> list[str]:
    """The cert dir `make deploy-certs` fills, handed to the chart as the docs say."""
    directory = tree / TLS_COMPONENT_CERTS
    files = f"tls.cert={directory}/tls.crt,tls.key={directory}/tls.key,tls.ca={directory}/ca.crt"
    return ["--set-file", files]


def overlay_values(overlay: str, tree: Path) -> list[str]:
    """The helm values that stand for each kustomize overlay."""
    return {
        "enforce": tls_values(tree),
        "dry-run": [*tls_values(tree), "--set", "dryRun=true"],
        "kind": [*tls_values(tree), "--set", "image.tag=dev,image.pullPolicy=Never"],
        "cert-manager": ["--set", "tls.source=cert-manager"],
        "self-managed": [*tls_values(tree), "--set", f"service.clusterIP={fixed_cluster_ip()}"],
    }[overlay]


def fixed_cluster_ip() -> str:
    """The address components/fixed-cluster-ip patches into the Service."""
    component = yaml.safe_load(
        (MANIFESTS / "components" / "fixed-cluster-ip" / "kustomization.yaml").read_text()
    )
    [patch] = component["patches"]
    [operation] = yaml.safe_load(patch["patch"])
    assert operation["path"] == "/spec/clusterIP"
    return str(operation["value"])


def template(helm: Path, home: Path, *values: str, namespace: str = NAMESPACE) -> Documents:
    text = helm_binary.run(helm, home, ["template", RELEASE, str(CHART), "--namespace", namespace, *values])
    return [doc for doc in yaml.safe_load_all(text) if doc]


def template_error(helm: Path, home: Path, *values: str, namespace: str = NAMESPACE) -> str:
    with pytest.raises(helm_binary.BuildError) as failed:
        template(helm, home, *values, namespace=namespace)
    return str(failed.value)


def by_key(docs: Documents) -> dict[Key, dict[str, Any]]:
    found = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(found) == len(docs), "two objects of the same kind and name"
    return found


def comparable(docs: Documents, *, from_helm: bool) -> dict[Key, dict[str, Any]]:
    """Objects by (kind, name); helm's own labels checked and dropped; the policy file parsed
    (the chart writes the policy from its values, so the text differs but not the document)."""
    out = {}
    for key, doc in by_key(copy.deepcopy(docs)).items():
        labels = doc["metadata"]["labels"]
        if from_helm:
            assert labels.keys() >= HELM_LABELS, key
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/version"] == chart.app_version()
            for label in HELM_LABELS:
                del labels[label]
        if doc["kind"] == "Secret":  # base64 line breaks (kustomize wraps, helm does not)
            doc["data"] = {name: "".join(value.split()) for name, value in doc["data"].items()}
        if doc["kind"] == "ConfigMap":
            doc["data"] = {name: yaml.safe_load(text) for name, text in doc["data"].items()}
        if doc["kind"] == "ValidatingWebhookConfiguration":
            for hook in doc["webhooks"]:
                if "caBundle" in hook["clientConfig"]:
                    hook["clientConfig"]["caBundle"] = "".join(hook["clientConfig"]["caBundle"].split())
        out[key] = doc
    return out


def one(docs: Documents, kind: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind]
    return found


def serve_args(docs: Documents) -> argparse.Namespace:
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return cli.parser().parse_args(["serve", *container["args"]])


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


# --- generated, fresh ------------------------------------------------------------------------


def test_chart_is_generated_from_the_base_and_the_policy() -> None:
    """``make manifests`` was run after the last change to manifests/base or rules/."""
    expected = chart.render(MANIFESTS, reviews.RULES)
    for name, text in expected.items():
        assert (CHART / name).read_text() == text, (
            f"{name} is stale: run `make manifests` and commit the result"
        )
    generated = {p.relative_to(CHART).as_posix() for p in CHART.rglob("*") if p.is_file()}
    hand_written = {".helmignore", "templates/_helpers.tpl", "templates/NOTES.txt"}
    assert generated - hand_written == set(expected), (
        "a file in the chart is neither generated nor listed here"
    )


def test_chart_and_app_versions_are_the_package_version() -> None:
    document = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert document["version"] == document["appVersion"] == chart.app_version()
    assert document["kubeVersion"] == chart.KUBE_VERSION


def test_values_default_to_what_the_base_deploys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    deployment = yaml.safe_load((MANIFESTS / "base" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert values["replicas"] == deployment["spec"]["replicas"]
    assert values["resources"] == container["resources"]
    assert f"{values['image']['repository']}:{chart.app_version()}" == container["image"]
    assert values["policy"] == yaml.safe_load((reviews.RULES / "policy.yaml").read_text())
    assert values["dryRun"] is False


def test_generator_refuses_an_image_tag_that_is_not_the_version(tmp_path: Path) -> None:
    copy_of = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy_of, ignore=shutil.ignore_patterns("certs"))
    deployment = copy_of / "base" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace(f"agent-guard:{chart.app_version()}", "agent-guard:9.9.9")
    )
    with pytest.raises(chart.ChartError, match=r"agent-guard:9\.9\.9 but the version is"):
        chart.render(copy_of, reviews.RULES)


# --- helm lint, helm template == kustomize build ------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_helm_lint(helm: Path, helm_home: Path, tree: Path, overlay: str) -> None:
    out = helm_binary.run(
        helm,
        helm_home,
        ["lint", "--strict", str(CHART), "--namespace", NAMESPACE, *overlay_values(overlay, tree)],
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chart_renders_what_kustomize_renders(
    helm: Path, helm_home: Path, tree: Path, rendered: dict[str, Documents], overlay: str
) -> None:
    from_chart = comparable(template(helm, helm_home, *overlay_values(overlay, tree)), from_helm=True)
    from_kustomize = comparable(rendered[overlay], from_helm=False)
    assert sorted(from_chart) == sorted(from_kustomize)
    for key, expected in from_kustomize.items():
        assert from_chart[key] == expected, key


# --- values ------------------------------------------------------------------------------------

AGENT_VARIANTS: dict[str, dict[str, Any]] = {
    "every-selector": {
        "serviceAccounts": ["mcp-*/agent-*", "ci/bot.v*", "tools/reader", "sandbox/*"],
        "groups": ["agent-guard.io:agents", "team:llm"],
        "usernames": ["mcp-bot@example.com", "robot"],
        "usernamePrefixes": ["oidc:agent-"],
        "extra": [{"key": "authentication.kubernetes.io/credential-id", "value": "X509SHA256=abc"}],
    },
    "usernames-only": {"serviceAccounts": [], "groups": [], "usernames": ["only-me"]},
    "one-service-account": {"serviceAccounts": ["a/b"], "groups": []},
}
POD_TEMPLATE_VARIANTS: dict[str, dict[str, Any]] = {
    "custom-kind": {
        "kinds": [{"group": "example.com", "resource": "widgets", "paths": ["spec.template.spec"]}]
    },
    "detect": {"detect": True, "kinds": [{"group": "", "resource": "things", "paths": ["spec"]}]},
}


def _policy_values(tmp_path: Path, section: dict[str, Any]) -> list[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"policy": section}))
    return ["-f", str(path)]


def _webhook_is_what_the_guard_renders(docs: Documents, tmp_path: Path, tree: Path | None) -> policy.Policy:
    """Load the policy the chart mounts and render its webhook configuration in Python: equal."""
    rules = tmp_path / "mounted"
    rules.mkdir()
    for name, text in one(docs, "ConfigMap")["data"].items():
        (rules / name).write_text(text)
    mounted = policy.load(rules)
    bundle = certs.ca_bundle(tree / TLS_COMPONENT_CERTS) if tree is not None else None
    expected = manifests.validating_webhook_configuration(mounted, bundle, service=("agent-guard", NAMESPACE))
    found = comparable(docs, from_helm=True)[("ValidatingWebhookConfiguration", "agent-guard")]
    assert found["webhooks"] == expected["webhooks"]
    return mounted


@pytest.mark.parametrize("variant", sorted(AGENT_VARIANTS))
def test_agents_in_values_become_the_match_conditions(
    helm: Path, helm_home: Path, tree: Path, tmp_path: Path, variant: str
) -> None:
    values = _policy_values(tmp_path, {"agents": AGENT_VARIANTS[variant]})
    docs = template(helm, helm_home, *tls_values(tree), *values)
    mounted = _webhook_is_what_the_guard_renders(docs, tmp_path, tree)
    assert mounted.agents.usernames == tuple(AGENT_VARIANTS[variant].get("usernames", ()))


@pytest.mark.parametrize("variant", sorted(POD_TEMPLATE_VARIANTS))
def test_pod_templates_in_values_route_their_kinds(
    helm: Path, helm_home: Path, tree: Path, tmp_path: Path, variant: str
) -> None:
    values = _policy_values(tmp_path, {"podTemplates": POD_TEMPLATE_VARIANTS[variant]})
    docs = template(helm, helm_home, *tls_values(tree), *values)
    mounted = _webhook_is_what_the_guard_renders(docs, tmp_path, tree)
    assert mounted.pod_templates.detect is (variant == "detect")


def test_guards_set_off_leave_the_rules_and_settings_reach_the_policy(
    helm: Path, helm_home: Path, tree: Path, tmp_path: Path
) -> None:
    section = {
        "guards": {
            "secret-access": {"mode": "off"},
            "rbac-escalation": {"mode": "off"},
            "namespace-delete": {"mode": "dry-run"},
            "workload-identity": {"allowedServiceAccounts": {"ci": ["builder"]}},
        },
        "exemptions": [
            {
                "guard": "namespace-delete",
                "serviceAccount": "mcp-system/mcp-k8s-go",
                "namespace": "preview-1",
                "reason": "CI tears down its own preview environment (OPS-1721)",
                "expires": "2099-12-31",
            }
        ],
    }
    docs = template(helm, helm_home, *tls_values(tree), *_policy_values(tmp_path, section))
    mounted = _webhook_is_what_the_guard_renders(docs, tmp_path, tree)
    assert mounted.mode_of("secret-access") == "off" and mounted.mode_of("namespace-delete") == "dry-run"
    assert len(mounted.exemptions) == 1
    full = template(helm, helm_home, *tls_values(tree))
    resources = {
        r
        for rule in one(full, "ValidatingWebhookConfiguration")["webhooks"][0]["rules"]
        for r in rule["resources"]
    }
    fewer = {
        r
        for rule in one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["rules"]
        for r in rule["resources"]
    }
    assert "secrets" in resources and fewer < resources  # secrets stays for other families' pod checks


def test_deployment_values(helm: Path, helm_home: Path, tree: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "replicas": 3,
                "image": {
                    "repository": "registry.example.com/agent-guard",
                    "tag": "1.2.3",
                    "pullPolicy": "Always",
                },
                "resources": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "300Mi"}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "guard", "effect": "NoSchedule"}
                ],
                "priorityClassName": "system-cluster-critical",
                "imagePullSecrets": [{"name": "registry"}],
                "dryRun": True,
            }
        )
    )
    docs = template(helm, helm_home, *tls_values(tree), "-f", str(values))
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example.com/agent-guard:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {
        "requests": {"cpu": "200m", "memory": "128Mi"},
        "limits": {"memory": "300Mi"},
    }
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["value"] == "guard"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert serve_args(docs).mode == "dry-run"


def test_another_namespace_moves_every_object_and_name(helm: Path, helm_home: Path, tmp_path: Path) -> None:
    other = "guard-ns"
    directory = tmp_path / "certs"
    certs.generate(directory, certs.DEFAULT_SERVICE, other)
    files = f"tls.cert={directory}/tls.crt,tls.key={directory}/tls.key,tls.ca={directory}/ca.crt"
    docs = template(
        helm, helm_home, "--set-file", files, "--set", f"policy.guardNamespace={other}", namespace=other
    )
    assert one(docs, "Namespace")["metadata"]["name"] == other
    cluster_scoped = ("Namespace", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding")
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == other, doc["kind"]
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == other, doc["kind"]
    hook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["service"]["namespace"] == other
    certificates = template(
        helm, helm_home, "--set", f"tls.source=cert-manager,policy.guardNamespace={other}", namespace=other
    )
    serving = next(d for d in certificates if d["metadata"]["name"] == "agent-guard-serving")
    assert serving["spec"]["dnsNames"][-1] == f"agent-guard.{other}.svc.cluster.local"
    hook_config = one(certificates, "ValidatingWebhookConfiguration")
    assert hook_config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{other}/agent-guard-serving"
    }


def test_namespace_and_secret_can_be_left_to_the_operator(helm: Path, helm_home: Path, tree: Path) -> None:
    ca = tree / TLS_COMPONENT_CERTS / "ca.crt"
    docs = template(
        helm, helm_home, "--set", "namespace.create=false,tls.create=false", "--set-file", f"tls.ca={ca}"
    )
    kinds = {d["kind"] for d in docs}
    assert "Namespace" not in kinds and "Secret" not in kinds
    hook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert "".join(hook["clientConfig"]["caBundle"].split()) == certs.ca_bundle(tree / TLS_COMPONENT_CERTS)


# --- values that cannot work fail, saying what to do -------------------------------------------


def test_without_certificates_the_error_says_how_to_make_them(helm: Path, helm_home: Path) -> None:
    message = template_error(helm, helm_home)
    assert "tls.cert is required" in message or "tls.ca is required" in message, message
    assert "agent-guard certs --out certs --service agent-guard --namespace agent-guard-system" in message


def test_unknown_tls_source_fails(helm: Path, helm_home: Path, tree: Path) -> None:
    message = template_error(helm, helm_home, *tls_values(tree), "--set", "tls.source=vault")
    assert 'tls.source must be secret or cert-manager, got "vault"' in message, message


def test_policy_guard_namespace_must_be_the_release_namespace(
    helm: Path, helm_home: Path, tree: Path
) -> None:
    message = template_error(helm, helm_home, *tls_values(tree), namespace="elsewhere")
    assert "policy.guardNamespace (agent-guard-system) must be the release namespace (elsewhere)" in message
    assert "policy.guardNamespace=elsewhere" in message


def test_broken_policy_or_tree_writes_no_chart(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "policy.yaml").write_text("apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents: {}\n")
    out = tmp_path / "chart"
    command = [sys.executable, "-m", "webhook", "manifests", "chart", "--out", str(out)]
    broken = subprocess.run(
        [*command, "--rules", str(rules)], capture_output=True, text=True, cwd=reviews.ROOT, check=False
    )
    assert broken.returncode == 1 and "nothing written" in broken.stderr and "agents:" in broken.stderr
    missing = subprocess.run(
        [*command, "--manifests", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
    )
    assert missing.returncode == 1 and "kustomization.yaml" in missing.stderr
    assert "Traceback" not in broken.stderr + missing.stderr
    assert not out.exists()
