"""The kind path (`make e2e-kind`) is consistent with the manifests; it cannot run without Docker."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests import reviews
from tests.manifests.conftest import MANIFESTS

E2E = reviews.ROOT / "tests" / "e2e"


def test_kind_cluster_has_nodes_for_both_replicas() -> None:
    config = yaml.safe_load((E2E / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2


def test_script_builds_the_image_the_kind_overlay_runs() -> None:
    script = (E2E / "kind.sh").read_text()
    built = re.search(r'^image="([^"]+)"', script, re.MULTILINE)
    assert built is not None
    name, _, tag = built.group(1).partition(":")
    overlay = yaml.safe_load((MANIFESTS / "overlays" / "kind" / "kustomization.yaml").read_text())
    [image] = overlay["images"]
    assert (image["name"], image["newTag"]) == (name, tag)
    assert "apply --server-side -k manifests/overlays/kind" in script
    assert "AGENT_GUARD_E2E_KUBECONFIG=" in script and 'pytest" -m "e2e and not local_only"' in script


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(E2E / "kind.sh")], check=True)
