"""kube-apiserver and etcd (and, for the real-node suite, the node's Kubernetes binaries), built from
the Go module proxy once and cached (``tests.gotools``).

Each binary is built from its own tiny Go module kept next to this file (so etcd's and Kubernetes'
dependency graphs never mix; kubelet, kube-controller-manager, kube-scheduler and kube-proxy share
kube-apiserver's module, so one pinned release and one Go build cache serve them all) and cached as
``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/<version>/<name>``; locking,
the temporary file renamed into place and the build log are ``tests.gotools``' business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import gotools

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
            # Without the stamps a binary reports v0.0.0-master: clients warn about version skew, and
            # the kubelet registers a node the apiserver's version-skew checks reject.
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
# The kind node image (tests/e2e/kind) also carries kubeadm and kubectl of the same release.
KUBEADM = _kubernetes("kubeadm")
KUBECTL = _kubernetes("kubectl")


def cache_root() -> Path:
    return gotools.cache_root()


def cached_path(component: Component) -> Path:
    return cache_root() / component.version / component.name


def ensure(component: Component, progress: Callable[[str], None] = print) -> Path:
    """The cached binary, built first if it is not there yet."""
    return gotools.ensure(component.tool(), progress)


def ensure_all(
    progress: Callable[[str], None] = print, components: tuple[Component, ...] = COMPONENTS
) -> dict[str, Path]:
    return {component.name: ensure(component, progress) for component in components}
