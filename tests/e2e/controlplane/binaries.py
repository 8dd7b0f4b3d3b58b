"""kube-apiserver and etcd (and kubectl, for the MCP scenarios, and the node's Kubernetes binaries, for
the real-node suite), built from the Go module proxy once and cached (``tests.gotools``).

Each binary is built from its own tiny Go module kept next to this file (so etcd's and Kubernetes'
dependency graphs never mix; kubelet, kube-controller-manager, kube-scheduler and kube-proxy share
kube-apiserver's module, so one pinned release and one Go build cache serve them all) and cached as
``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/<version>/<name>``; locking,
the temporary file renamed into place and the build log are ``tests.gotools``' business.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import gotools
from webhook import manifests

HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT_SECONDS = 45 * 60

BuildError = gotools.BuildError
GoMissing = gotools.GoMissing


@dataclass(frozen=True)
class Component:
    name: str  # the binary's file name
    module_dir: Path  # the Go module that pins it
    package: str  # the main package built from that module
    requirement: str  # the module path whose version names the cache directory

    @property
    def version(self) -> str:
        return gotools.module_version(self.module_dir, self.requirement)

    def ldflags(self) -> str:
        flags = "-s -w"
        if self.module_dir.name == "kube-apiserver":
            # Without the stamps a binary reports v0.0.0-master: clients warn about version skew, the
            # kubelet registers a node the apiserver's version-skew checks reject, and kubectl reports
            # (``kubectl version``, its User-Agent) client-go's version, not component-base's.
            major, minor = self.version.lstrip("v").split(".")[:2]
            base = "k8s.io/component-base/version"
            flags += (
                f" -X {base}.gitVersion={self.version} -X {base}.gitMajor={major}"
                f" -X {base}.gitMinor={minor} -X {base}.gitTreeState=clean"
                f" -X k8s.io/client-go/pkg/version.gitVersion={self.version}"
            )
        return flags

    def tool(self) -> gotools.Tool:
        return gotools.Tool(
            name=f"{self.name} {self.version}",
            module_dir=self.module_dir,
            package=self.package,
            target=cached_path(self),
            purpose=f"the end-to-end suite builds {self.name} from the Go module proxy",
            ldflags=self.ldflags(),
            timeout_seconds=BUILD_TIMEOUT_SECONDS,
        )


KUBE_APISERVER = Component(
    name="kube-apiserver",
    module_dir=HERE / "kube-apiserver",
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    requirement="k8s.io/kubernetes",
)
ETCD = Component(
    name="etcd",
    module_dir=HERE / "etcd",
    package="go.etcd.io/etcd/server/v3",
    requirement="go.etcd.io/etcd/server/v3",
)
COMPONENTS = (ETCD, KUBE_APISERVER)
# Not in COMPONENTS: only the MCP scenarios need it (mcp-server-kubernetes runs kubectl), so they build it.
# Same module as kube-apiserver: the same pinned release and staging replaces, one dependency graph.
KUBECTL = Component(
    name="kubectl",
    module_dir=HERE / "kube-apiserver",
    package="k8s.io/kubernetes/cmd/kubectl",
    requirement="k8s.io/kubernetes",
)

# The version matrix (make e2e-matrix): one pinning module per Kubernetes minor, each cached under its
# own version like the default. AGENT_GUARD_E2E_KUBERNETES=<minor> runs the suite against that one.
KUBERNETES_ENV = "AGENT_GUARD_E2E_KUBERNETES"
MATRIX = {
    "1.30": HERE / "kube-apiserver-1.30",
    "1.32": HERE / "kube-apiserver-1.32",
    "1.34": HERE / "kube-apiserver",
    "1.37": HERE / "kube-apiserver-1.37",
}


class UnknownVersion(gotools.BuildError):
    """AGENT_GUARD_E2E_KUBERNETES names a minor the matrix does not pin."""


def kubernetes_version() -> tuple[int, int] | None:
    """The release selected by ``KUBERNETES_ENV`` (None: the default module's, the newest forms)."""
    minor = os.environ.get(KUBERNETES_ENV, "")
    return manifests.kubernetes_version(minor) if minor else None


def kube_apiserver(minor: str | None = None) -> Component:
    """The kube-apiserver of ``minor`` (default: the environment's choice, else the default module)."""
    minor = minor if minor is not None else os.environ.get(KUBERNETES_ENV, "")
    if not minor:
        return KUBE_APISERVER
    if minor not in MATRIX:
        raise UnknownVersion(f"{KUBERNETES_ENV}={minor}: the matrix pins {', '.join(MATRIX)}")
    return Component(
        name="kube-apiserver",
        module_dir=MATRIX[minor],
        package=KUBE_APISERVER.package,
        requirement=KUBE_APISERVER.requirement,
    )


def _kubernetes(name: str) -> Component:
    return Component(
        name=name,
        module_dir=HERE / "kube-apiserver",
        package=f"k8s.io/kubernetes/cmd/{name}",
        requirement="k8s.io/kubernetes",
    )


# The real-node suite (tests/e2e/node): the same release as KUBE_APISERVER, slowest build first.
KUBELET = _kubernetes("kubelet")
KUBE_CONTROLLER_MANAGER = _kubernetes("kube-controller-manager")
KUBE_PROXY = _kubernetes("kube-proxy")
KUBE_SCHEDULER = _kubernetes("kube-scheduler")
NODE_COMPONENTS = (KUBELET, KUBE_CONTROLLER_MANAGER, KUBE_PROXY, KUBE_SCHEDULER)


def cache_root() -> Path:
    return gotools.cache_root()


def cached_path(component: Component) -> Path:
    return cache_root() / component.version / component.name


def ensure(component: Component, progress: Callable[[str], None] = print) -> Path:
    """The cached binary, built first if it is not there yet."""
    return gotools.ensure(component.tool(), progress)


def ensure_all(
    progress: Callable[[str], None] = print, components: tuple[Component, ...] | None = None
) -> dict[str, Path]:
    """``components``, by default etcd and the kube-apiserver of the selected release (``KUBERNETES_ENV``)."""
    chosen = components if components is not None else (ETCD, kube_apiserver())
    return {component.name: ensure(component, progress) for component in chosen}
