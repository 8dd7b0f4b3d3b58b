"""Where the end-to-end suite gets its cluster, and how that cluster reaches the guard.

The scenarios only talk to a ``Target``: an apiserver URL with its CA and an admin credential, where
the guard runs (a local process the apiserver dials by URL, or a Deployment inside the cluster), the
audit log when there is one, and what to print when a test fails. Two implementations:

- ``Local`` (the default): etcd + kube-apiserver built from source and run as processes; the suite
  starts its own guard processes and registers them. The apiserver reads its authorizer chain once,
  at start-up, so ``provide`` takes the ``AuthorizationConfiguration`` file, and ``guard_url`` is
  known before the cluster exists (the file names the guard's URL).
- ``kubeconfig.Kubeconfig``, selected by ``AGENT_GUARD_E2E_KUBECONFIG`` (``make e2e-kind``): the
  cluster of that kubeconfig's current context, the admin being its identity, with the guard already
  deployed in ``agent-guard-system`` (``manifests/overlays/kind``); see ``incluster``. Its apiserver's
  flags were fixed when the cluster was created: the ``AuthorizationConfiguration`` is not used.
- ``controlplane.node.NodeCluster``, selected by ``AGENT_GUARD_E2E_NODE=1`` (``make e2e-node``): a
  real node on this host (controllers, containerd, a kubelet, kube-proxy) with the guard installed
  from its own image and ``manifests/overlays/self-managed``; the apiserver authorizes agents
  through that in-cluster guard (its own authorizer files, rendered for the Service's ClusterIP).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.e2e import kubeconfig
from tests.e2e.controlplane import binaries, host, images, node, processes

KUBECONFIG_ENV = "AGENT_GUARD_E2E_KUBECONFIG"
NODE_ENV = "AGENT_GUARD_E2E_NODE"


class Unavailable(Exception):
    """The requested cluster mode cannot be used; the message says why."""


class Target(Protocol):
    @property
    def description(self) -> str: ...

    @property
    def server(self) -> str:
        """The https URL of the apiserver."""
        ...

    @property
    def ca_file(self) -> Path:
        """The CA that signed the apiserver's serving certificate."""
        ...

    @property
    def admin_token(self) -> str:
        """The admin's bearer token ("" when the admin authenticates with a client certificate)."""
        ...

    @property
    def admin_client_cert(self) -> tuple[Path, Path] | None:
        """The admin's client certificate and key files, when that is how it authenticates."""
        ...

    @property
    def guard_in_cluster(self) -> bool:
        """True: the guard is deployed in the cluster and the suite starts none of its own."""
        ...

    @property
    def guard_authorizer(self) -> bool:
        """True: the apiserver asks the guard's /authorize about agents (``Stack.authorizer``)."""
        ...

    @property
    def audit_log(self) -> Path | None:
        """The apiserver's audit log; None when the suite cannot read it."""
        ...

    def guard_url(self, port: int) -> str:
        """The URL the apiserver dials to reach a guard listening on this host at ``port``."""
        ...

    def diagnostics(self) -> str:
        """Log tails of the cluster's own processes, printed when a test fails."""
        ...


@dataclass
class Local(processes.OwnControlPlane):
    """The control plane from ``controlplane.processes``, on loopback."""

    plane: processes.ControlPlane
    description: str = "local kube-apiserver + etcd"

    @property
    def guard_in_cluster(self) -> bool:
        return False

    def guard_url(self, port: int) -> str:
        return guard_url(port)

    def diagnostics(self) -> str:
        return self.plane.diagnostics()


def guard_url(port: int) -> str:
    """Where the cluster of this mode reaches a guard on this host at ``port`` (``Target.guard_url``)."""
    # The guard's certificate has 127.0.0.1 as an IP SAN; an IP avoids localhost -> ::1 surprises.
    return f"https://127.0.0.1:{port}"


def mode() -> str:
    if os.environ.get(KUBECONFIG_ENV):
        return "kubeconfig"
    return "node" if os.environ.get(NODE_ENV) else "local"


def needs_binaries() -> bool:
    return mode() != "kubeconfig"


def components() -> tuple[binaries.Component, ...]:
    """The binaries this mode runs (the real node's slowest build, the kubelet, first)."""
    if mode() == "node":
        return binaries.NODE_COMPONENTS + binaries.COMPONENTS
    return (binaries.ETCD, binaries.kube_apiserver())  # the release AGENT_GUARD_E2E_KUBERNETES selects


@contextlib.contextmanager
def provide(
    workdir: Path,
    found: dict[str, Path],
    authorization_config: Path,
    admission_config: Path | None = None,
    progress: Callable[[str], None] = print,
) -> Iterator[Target]:
    """The cluster for this session, torn down on exit. A local one authorizes with
    ``authorization_config`` and configures admission plugins with ``admission_config``; an existing
    cluster's are its own, and the real node's are rendered for its in-cluster guard (the files are
    not used)."""
    if mode() == "kubeconfig":
        try:
            target = kubeconfig.load(Path(os.environ[KUBECONFIG_ENV]), workdir)
        except kubeconfig.KubeconfigError as exc:
            raise Unavailable(f"{KUBECONFIG_ENV}: {exc}") from exc
        yield target
        return
    if mode() == "node":
        try:
            with node.running(workdir / "node", found, progress) as cluster:
                yield cluster
        except (host.HostUnavailable, images.ImageError) as exc:
            raise Unavailable(f"{NODE_ENV}: {exc}") from exc
        return
    with processes.running(
        workdir / "controlplane",
        found["etcd"],
        found["kube-apiserver"],
        authorization_config,
        admission_config,
    ) as plane:
        yield Local(plane)
