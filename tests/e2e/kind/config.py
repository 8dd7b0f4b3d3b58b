"""The kind cluster configuration ``make e2e-kind`` creates, from ``tests/e2e/kind-config.yaml``.

``python -m tests.e2e.kind.config AUTHZ_DIR OUT [--local]`` writes ``OUT``: the file with the
authorizer's rendered directory filled in, and ``audit/`` next to it with the suite's audit policy
(the apiserver writes its audit log there). With ``--local`` (the node image made here,
``tests.e2e.kind.nodeimage``) it is also adapted to what that image has:

- **one node**: the image has no kindnetd (not buildable from the Go module proxy), so networking is
  the reference CNI plugins from Debian, configured statically (``cni/10-bridge.conflist``, mounted
  into the node; ``networking.disableDefaultCNI``). A bridge reaches the pods of its own node only;
  more nodes would need routes between their pod CIDRs, which is a multi-node CNI's job. The
  control-plane node then runs workloads (kind removes its taint when it is the only node).
- **room for the suite's pods**: ``maxPods`` 250 instead of 110, the whole suite's pods on one node.
- **etcd by its own version**: the image carries the suite's etcd build, tagged with its release, and
  kubeadm is pointed at that tag instead of its default.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tests import reviews
from tests.e2e.controlplane import processes
from tests.e2e.kind import nodeimage

SOURCE = reviews.ROOT / "tests" / "e2e" / "kind-config.yaml"
CONFLIST = Path(__file__).resolve().parent / "cni" / "10-bridge.conflist"
PLACEHOLDER = "AUTHZ_DIR"
AUDIT_PLACEHOLDER = "AUDIT_DIR"
MAX_PODS = 250  # within the node's /24 of pod addresses (cni/10-bridge.conflist)


def render(authz_dir: Path, *, local: bool, audit_dir: Path | None = None) -> dict[str, Any]:
    """``audit_dir`` (default: ``audit`` next to ``authz_dir``) gets the suite's audit policy and the
    apiserver's audit log (``AGENT_GUARD_E2E_AUDIT_LOG``)."""
    audit = audit_dir or authz_dir.parent / "audit"
    text = SOURCE.read_text().replace(PLACEHOLDER, str(authz_dir)).replace(AUDIT_PLACEHOLDER, str(audit))
    config: dict[str, Any] = yaml.safe_load(text)
    if not local:
        return config
    config["nodes"] = [node for node in config["nodes"] if node["role"] == "control-plane"]
    config["nodes"][0].setdefault("extraMounts", []).append(
        {"hostPath": str(CONFLIST), "containerPath": "/etc/cni/net.d/10-bridge.conflist", "readOnly": True}
    )
    config.setdefault("networking", {})["disableDefaultCNI"] = True
    config.setdefault("kubeadmConfigPatches", []).extend(
        [
            yaml.safe_dump(
                {"kind": "ClusterConfiguration", "etcd": {"local": {"imageTag": nodeimage.ETCD_TAG}}}
            ),
            # Every scenario's pods land on this one node (the kubelet's default allows 110).
            yaml.safe_dump({"kind": "KubeletConfiguration", "maxPods": MAX_PODS}),
        ]
    )
    return config


def main(arguments: list[str]) -> int:
    local = "--local" in arguments
    paths = [argument for argument in arguments if argument != "--local"]
    if len(paths) != 2:
        print("usage: python -m tests.e2e.kind.config AUTHZ_DIR OUT [--local]", file=sys.stderr)
        return 2
    authz = Path(paths[0]).resolve()
    audit = authz.parent / "audit"
    audit.mkdir(parents=True, exist_ok=True)
    (audit / "audit-policy.yaml").write_text(processes.AUDIT_POLICY)  # the local suite's own policy
    Path(paths[1]).write_text(yaml.safe_dump(render(authz, local=local, audit_dir=audit), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
