"""The Go programs `make e2e-kind` builds from the Go module proxy, pinned by the modules in ``go/``.

- ``kind`` itself (``sigs.k8s.io/kind``), which creates the cluster and builds the node image.
- ``crictl`` and ``ctr`` for the node image's base: kind's node image build and ``kind load`` call
  ``ctr`` features (``ctr info``, ``images import --label``) that Debian's containerd 1.6 ``ctr`` lacks,
  and kind's base image carries ``crictl``; both come from their upstream modules instead.
- CoreDNS, the cluster DNS kubeadm installs, for its image.

Each is cached under ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/<module version>/<name>`` like the
control plane's binaries (``tests.gotools`` locks, logs and renames into place).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import gotools
from tests.e2e.controlplane import binaries

HERE = Path(__file__).resolve().parent / "go"


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str  # the module whose version go/<name>/go.mod pins
    package: str

    @property
    def module_dir(self) -> Path:
        return HERE / self.name

    @property
    def version(self) -> str:
        return gotools.module_version(self.module_dir, self.module)

    def tool(self) -> gotools.Tool:
        return gotools.Tool(
            name=f"{self.name} {self.version}",
            module_dir=self.module_dir,
            package=self.package,
            target=gotools.cache_root() / self.version / self.name,
            purpose=f"make e2e-kind builds {self.name} from the Go module proxy",
            timeout_seconds=30 * 60,
        )


KIND = GoTool("kind", "sigs.k8s.io/kind", "sigs.k8s.io/kind")
CRICTL = GoTool("crictl", "sigs.k8s.io/cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl")
CTR = GoTool("ctr", "github.com/containerd/containerd", "github.com/containerd/containerd/cmd/ctr")
COREDNS = GoTool("coredns", "github.com/coredns/coredns", "github.com/coredns/coredns")
ALL = (KIND, CRICTL, CTR, COREDNS)


def ensure(tool: GoTool, progress: Callable[[str], None] = print) -> Path:
    return gotools.ensure(tool.tool(), progress)


def main(arguments: list[str]) -> int:
    """``python -m tests.e2e.kind.tools NAME...`` prints each cached binary's path (building it first);
    names: kind, ctr, crictl, coredns and the Kubernetes release's kubectl, kubeadm."""
    known = {tool.name: tool for tool in ALL}
    kubernetes = {"kubectl": binaries.KUBECTL, "kubeadm": binaries.KUBEADM}
    for name in arguments:
        if name not in known and name not in kubernetes:
            print(
                f"e2e-kind: unknown tool {name!r} (known: {', '.join([*known, *kubernetes])})",
                file=sys.stderr,
            )
            return 2
    try:
        for name in arguments:
            if name in known:
                print(ensure(known[name], lambda message: print(message, file=sys.stderr)))
            else:
                print(binaries.ensure(kubernetes[name], lambda message: print(message, file=sys.stderr)))
    except gotools.BuildError as error:
        print(f"e2e-kind: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
