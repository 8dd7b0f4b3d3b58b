"""The kind cluster make e2e-kind creates: the authorizer wired by kubeadm patches, and the local node
image's single-node variant (tests/e2e/kind/config.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.kind import config, nodeimage

AUTHZ = Path("/tmp/rendered-authz")


def patches(rendered: dict[str, Any]) -> list[dict[str, Any]]:
    return [yaml.safe_load(text) for text in rendered["kubeadmConfigPatches"]]


def test_the_authorizer_directory_is_mounted_and_passed_to_the_apiserver() -> None:
    rendered = config.render(AUTHZ, local=False)
    [control_plane] = [node for node in rendered["nodes"] if node["role"] == "control-plane"]
    assert {"hostPath": str(AUTHZ), "containerPath": "/etc/kubernetes/agent-guard", "readOnly": True} in (
        control_plane["extraMounts"]
    )
    [cluster] = [p for p in patches(rendered) if p["kind"] == "ClusterConfiguration"]
    api = cluster["apiServer"]
    assert api["extraArgs"]["authorization-config"] == "/etc/kubernetes/agent-guard/authorization-config.yaml"
    assert "authorization-mode" not in api["extraArgs"]  # kubeadm leaves it out; both would be refused
    volume = next(v for v in api["extraVolumes"] if v["name"] == "agent-guard")
    assert volume["hostPath"] == volume["mountPath"] == "/etc/kubernetes/agent-guard" and volume["readOnly"]
    assert len(rendered["nodes"]) == 3 and "networking" not in rendered


def test_the_audit_log_is_written_where_the_suite_reads_it() -> None:
    rendered = config.render(AUTHZ, local=False, audit_dir=Path("/tmp/audit-here"))
    [control_plane] = [node for node in rendered["nodes"] if node["role"] == "control-plane"]
    mounts = {mount["containerPath"]: mount["hostPath"] for mount in control_plane["extraMounts"]}
    api = next(p for p in patches(rendered) if p["kind"] == "ClusterConfiguration")["apiServer"]
    log_dir = str(Path(api["extraArgs"]["audit-log-path"]).parent)
    assert mounts[log_dir] == "/tmp/audit-here"
    assert any(v["mountPath"] == v["hostPath"] == log_dir for v in api["extraVolumes"])
    assert Path(api["extraArgs"]["audit-policy-file"]).parent == Path(log_dir)


def test_the_local_node_image_gets_one_node_the_reference_plugins_and_its_etcd() -> None:
    rendered = config.render(AUTHZ, local=True)
    [node] = rendered["nodes"]
    assert node["role"] == "control-plane"
    mounts = {mount["containerPath"]: mount["hostPath"] for mount in node["extraMounts"]}
    assert mounts["/etc/kubernetes/agent-guard"] == str(AUTHZ)
    conflist = json.loads(Path(mounts["/etc/cni/net.d/10-bridge.conflist"]).read_text())
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["bridge", "portmap"]
    assert rendered["networking"]["disableDefaultCNI"] is True
    found = patches(rendered)
    assert {"kind": "ClusterConfiguration", "etcd": {"local": {"imageTag": nodeimage.ETCD_TAG}}} in found
    assert {"kind": "KubeletConfiguration", "maxPods": config.MAX_PODS} in found
    assert any("apiServer" in p for p in found)  # the authorizer patch is kept


def test_containerd_config_is_adapted_to_this_host() -> None:
    text = (
        '[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.10"\n'
        "  restrict_oom_score_adj = false\n"
    )
    adapted = nodeimage.containerd_config(text)
    assert "restrict_oom_score_adj = true" in adapted
    assert 'sandbox_image = "registry.k8s.io/pause:3.10.1"' in adapted
