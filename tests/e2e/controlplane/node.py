"""A real one-node cluster on this host, and the guard installed into it as an operator would.

``running`` brings up, in this order (each step waits for the previous one):

1. the Debian packages (``host.ensure_packages``), the images (``images``: the sandbox image and the
   guard's image from its Dockerfile), then a ``host.Snapshot`` of everything the node will change;
2. the bridge ``kag-node0`` with the node's address (the apiserver dials the kubelet there) and the
   kubelet's cgroup root;
3. the guard's certificates (``agent-guard certs``, the documented ``make deploy-certs`` step, into a
   copy of ``manifests/``) and the apiserver's authorizer files rendered by ``agent-guard manifests
   authz`` for the Service's fixed ClusterIP (``overlays/self-managed``, docs/deploy.md);
4. etcd and kube-apiserver (``processes``: loopback, the node's components authenticate with tokens,
   the apiserver reaches the kubelet with a client certificate), then kube-controller-manager and
   kube-scheduler once ``/readyz`` answers;
5. containerd (its own config, root, state and socket in the work directory; the CRI plugin with
   ``restrict_oom_score_adj`` because this host lacks CAP_SYS_RESOURCE, and the reference CNI
   plugins on the bridge), the images imported into it, the kubelet (cgroupfs, cgroup v1 allowed),
   kube-proxy (iptables mode); the Node Ready;
6. the guard: ``kustomize build`` of ``tests/e2e/node/overlay`` (``overlays/self-managed`` plus
   ``imagePullPolicy: Never``), server-side applied, and the Deployment rolled out.

On exit everything is stopped in reverse order and ``Snapshot.restore`` undoes the rest; anything
still different from the snapshot raises ``NodeError`` (the suite reports it as a failure).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import reviews, serving
from tests.e2e import kube, serverside
from tests.e2e.controlplane import binaries, host, images, processes
from tests.manifests import kustomize_binary, rendering
from webhook import manifests

Progress = Callable[[str], None]
NODE_NAME = "kag-node"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR
GUARD_CLUSTER_IP = "10.96.0.250"  # manifests/components/fixed-cluster-ip
GUARD_NAMESPACE = "agent-guard-system"
GUARD_SERVER_NAME = f"agent-guard.{GUARD_NAMESPACE}.svc"
OVERLAY = Path(__file__).resolve().parents[1] / "node" / "overlay"
# How often the kubelet syncs every pod, and with it the ConfigMap and Secret volumes the guard
# reloads from. The kubelet's default is 1m; 10s keeps the hot-reload scenarios short, and the
# measured delay is reported with this value (docs/testing.md).
KUBELET_SYNC_FREQUENCY = "10s"
READY_TIMEOUT_SECONDS = 180.0
ROLLOUT_TIMEOUT_SECONDS = 240.0
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"
PROXY_USER = "system:kube-proxy"
NODE_USER = f"system:node:{NODE_NAME}"


class NodeError(Exception):
    """The node could not be started, the guard not installed, or the host not restored."""


# --- certificates and credentials -----------------------------------------------------------------


def _kubelet_client_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA the kubelet trusts for client certificates, and the apiserver's client pair signed by it
    (group system:masters: the kubelet's webhook authorizer asks the apiserver, which allows it)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kag-node kubelet client CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (
        directory / "kubelet-ca.crt",
        directory / "apiserver-kubelet-client.crt",
        directory / "apiserver-kubelet-client.key",
    )
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


@dataclass(frozen=True)
class Credential:
    user: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def line(self) -> str:
        return f'{self.token},{self.user},{self.user},"{",".join(self.groups)}"'


def write_kubeconfig(path: Path, server: str, ca: Path, credential: Credential) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": credential.user, "user": {"token": credential.token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": credential.user}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# --- configuration files ------------------------------------------------------------------------


def containerd_config(directory: Path, cni_conf_dir: Path) -> Path:
    config = f"""\
version = 2
root = "{directory / "root"}"
state = "{directory / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{directory / "containerd.sock"}"

[ttrpc]
  address = "{directory / "containerd.sock.ttrpc"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{directory / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # This host's capability bounding set lacks CAP_SYS_RESOURCE: without this, runc cannot lower a
  # sandbox's oom_score_adj to -998 and every pod fails to start (docs/testing.md).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf_dir}"
"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(config)
    return path


def cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0",
        "name": "kag-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": host.BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": host.POD_SUBNET, "gateway": host.GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-kag-node.conflist").write_text(json.dumps(conflist, indent=2))


def kubelet_config(directory: Path, client_ca: Path, runtime: Path, port: int) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": host.GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{host.CGROUP_ROOT}",
        "failCgroupV1": False,  # this host has cgroup v1 (v1.34 still runs there)
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{runtime}",
        "podLogsDir": str(directory / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared build machine's disk is often fuller than the defaults allow: no evictions.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "shutdownGracePeriod": "0s",
        "syncFrequency": KUBELET_SYNC_FREQUENCY,
        "protectKernelDefaults": False,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kubelet-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- the cluster --------------------------------------------------------------------------------


@dataclass
class NodeCluster(processes.OwnControlPlane):
    """``cluster.Target`` for the real node: the guard is the Deployment installed from the manifests."""

    workdir: Path
    plane: processes.ControlPlane
    components: list[processes.Process]
    manifests_copy: Path
    description: str = (
        f"real node ({NODE_NAME}): kube-apiserver, controllers, containerd, kubelet, kube-proxy"
    )

    @property
    def guard_in_cluster(self) -> bool:
        return True

    @property
    def guard_certs(self) -> Path:
        """The certificates the documented cert step made (CA key included, for rotation tests)."""
        return self.manifests_copy / rendering.TLS_COMPONENT_CERTS

    def guard_url(self, port: int) -> str:
        raise NodeError(
            f"the guard runs in the cluster of the real node; no guard on this host (port {port}) is "
            "reachable for the apiserver: scenarios use the deployed guard (tests/e2e/incluster.py)"
        )

    def diagnostics(self, lines: int = 40) -> str:
        parts = [self.plane.diagnostics(lines)]
        for process in self.components:
            state = "running" if process.alive() else f"exited {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}), last {lines} lines of {process.log}:\n")
            parts.append(process.output(lines) + "\n")
        return "".join(parts)


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise NodeError(f"{what} not within {timeout:.0f}s:\n{log()}")


def _node_ready(admin: kube.Client) -> bool:
    reply = admin.request(kube.Request("GET", f"/api/v1/nodes/{NODE_NAME}"))
    if reply.status != 200:
        return False
    conditions = reply.body.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ctr(socket: Path, *arguments: str) -> str:
    return images.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", *arguments], "ctr " + arguments[0]
    )


def import_image(socket: Path, archive: Path) -> None:
    """``ctr images import``: it stores ``x:tag`` as ``docker.io/library/x:tag``, the normalized name
    CRI looks images up by (``imagePullPolicy: Never`` then finds it)."""
    ctr(socket, "images", "import", str(archive))


def render_authorizer(guard_certs: Path, directory: Path) -> Path:
    """The apiserver's authorizer files, by the documented command (docs/deploy.md)."""
    kubeconfig_path = directory / manifests.KUBECONFIG_FILE
    command = [
        sys.executable,
        "-m",
        "webhook",
        "manifests",
        "authz",
        "--rules",
        str(reviews.RULES),
        "--cert-dir",
        str(guard_certs),
        "--url",
        f"https://{GUARD_CLUSTER_IP}",
        "--tls-server-name",
        GUARD_SERVER_NAME,
        "--kubeconfig-path",
        str(kubeconfig_path),
        "--out",
        str(directory),
    ]
    images.run(command, "agent-guard manifests authz", cwd=reviews.ROOT)
    return directory / manifests.CONFIG_FILE


def deployed_image(objects: list[dict[str, Any]]) -> str:
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "agent-guard":
            return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])
    raise NodeError("the overlay renders no Deployment agent-guard")


def render_overlay(workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """``manifests/`` copied with the documented cert step (``rendering.tree``), the test overlay next
    to it, and ``kustomize build`` of that overlay."""
    copy = rendering.tree(workdir)
    overlay = workdir / "overlay"
    shutil.copytree(OVERLAY, overlay)
    text = kustomize_binary.build(kustomize_binary.ensure(), overlay)
    return copy, [doc for doc in yaml.safe_load_all(text) if doc]


def install(admin: kube.Client, objects: list[dict[str, Any]]) -> None:
    """``kubectl apply --server-side`` of the rendered overlay: the namespace first, then the rest."""
    discovery = serverside.Discovery(admin)
    ordered = sorted(objects, key=lambda o: o["kind"] != "Namespace")
    for obj in ordered:
        resource = discovery.resource(obj)
        if resource is None:
            raise NodeError(f"the cluster does not serve {obj['apiVersion']} {obj['kind']}")
        admin.ok(serverside.apply(resource, obj, dry_run=False))


def wait_for_rollout(admin: kube.Client, replicas: int) -> None:
    path = f"/apis/apps/v1/namespaces/{GUARD_NAMESPACE}/deployments/agent-guard"
    status: dict[str, Any] = {}

    def done() -> bool:
        nonlocal status
        found = admin.ok(kube.Request("GET", path)).body
        status = found.get("status", {})
        return bool(
            status.get("observedGeneration", 0) >= found["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
        )

    _wait("the guard's Deployment rolled out", done, ROLLOUT_TIMEOUT_SECONDS, lambda: f"status {status}")


@dataclass(frozen=True)
class Prepared:
    manifests_copy: Path  # manifests/ after the documented cert step
    objects: list[dict[str, Any]]  # the rendered overlay
    pause: Path  # image archives
    guard_image: Path


def prepare(workdir: Path, progress: Progress) -> Prepared:
    """What the node needs before it starts (each cached after the first time): the Debian packages,
    the rendered overlay, the sandbox image and the guard's image under the name the overlay deploys."""
    host.require_root()
    host.ensure_packages(progress)
    workdir.mkdir(parents=True, exist_ok=True)
    copy, objects = render_overlay(workdir / "install")
    pause = images.pause_archive(binaries.KUBE_APISERVER.module_dir, progress)
    guard_image = images.guard_archive(deployed_image(objects), progress)
    return Prepared(copy, objects, pause, guard_image)


@contextlib.contextmanager
def running(workdir: Path, found: dict[str, Path], progress: Progress) -> Iterator[NodeCluster]:
    """The node with the guard installed; everything stopped and the host restored on exit."""
    prepared = prepare(workdir, progress)
    with host.exclusive(progress):
        yield from _running(workdir, found, progress, prepared)


def _running(
    workdir: Path, found: dict[str, Path], progress: Progress, prepared: Prepared
) -> Iterator[NodeCluster]:
    stale = host.remove_stale()
    if stale:
        progress(f"removed what an earlier node left behind: {', '.join(stale)}")
    snapshot = host.Snapshot.take(workdir)
    started: list[processes.Process] = []
    problems: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            yield _bring_up(workdir, found, progress, prepared, started, stack)
    finally:
        began = time.monotonic()
        snapshot.restore()
        problems = snapshot.leftovers()
        progress(f"host restored in {time.monotonic() - began:.0f}s ({len(problems)} differences left)")
    if problems:
        raise NodeError("the host is not as it was before the node started:\n  " + "\n  ".join(problems))


def _bring_up(  # noqa: PLR0917 - one caller, the steps in order
    workdir: Path,
    found: dict[str, Path],
    progress: Progress,
    prepared: Prepared,
    started: list[processes.Process],
    stack: contextlib.ExitStack,
) -> NodeCluster:
    copy, objects = prepared.manifests_copy, prepared.objects
    started_at = time.monotonic()
    host.create_bridge()
    host.create_cgroup_root()
    pki_dir = workdir / "node-pki"
    kubelet_ca, client_cert, client_key = _kubelet_client_pki(pki_dir)
    authz = render_authorizer(copy / rendering.TLS_COMPONENT_CERTS, workdir / "authz")
    credentials = {
        "kube-controller-manager": Credential(CONTROLLER_MANAGER_USER),
        "kube-scheduler": Credential(SCHEDULER_USER),
        "kube-proxy": Credential(PROXY_USER),
        "kubelet": Credential(NODE_USER, ("system:nodes",)),
    }
    plane = stack.enter_context(
        processes.running(
            workdir / "controlplane",
            found["etcd"],
            found["kube-apiserver"],
            authz,
            extra_flags=(
                f"--kubelet-client-certificate={client_cert}",
                f"--kubelet-client-key={client_key}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--enable-admission-plugins=" + ",".join((*processes.ADMISSION_PLUGINS, "NodeRestriction")),
                "--endpoint-reconciler-type=lease",
            ),
            extra_tokens=tuple(c.line() for c in credentials.values()),
            # The guard's pods watch RBAC (--rbac-source=in-cluster) through the kubernetes Service:
            # the apiserver listens on the node's bridge address, publishes it as the Service's
            # endpoint (the lease reconciler) and names the Service's ClusterIP in its certificate.
            address=host.GATEWAY,
            serving_ips=(host.GATEWAY, KUBERNETES_SERVICE_IP),
        )
    )
    # Registered after the control plane: it runs first, while the apiserver still answers.
    stack.callback(_teardown, started, workdir, found["kube-proxy"], progress)
    api = plane.apiserver
    kubeconfigs = {
        name: write_kubeconfig(pki_dir / f"{name}.kubeconfig", api.url, api.pki.ca, credential)
        for name, credential in credentials.items()
    }
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)

    def launch(name: str, command: list[str]) -> processes.Process:
        process = processes.start(name, command, logs / f"{name}.log")
        started.append(process)
        return process

    launch(
        "kube-controller-manager",
        [
            str(found["kube-controller-manager"]),
            f"--kubeconfig={kubeconfigs['kube-controller-manager']}",
            f"--service-account-private-key-file={api.pki.service_account_key}",
            f"--root-ca-file={api.pki.ca}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--v=1",
        ],
    )
    launch(
        "kube-scheduler",
        [
            str(found["kube-scheduler"]),
            f"--kubeconfig={kubeconfigs['kube-scheduler']}",
            f"--authentication-kubeconfig={kubeconfigs['kube-scheduler']}",
            f"--authorization-kubeconfig={kubeconfigs['kube-scheduler']}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={serving.free_port()}",
            "--v=1",
        ],
    )
    containerd_dir = workdir / "containerd"
    cni_dir = workdir / "cni"
    cni_config(cni_dir / "net.d", cni_dir / "ipam")
    socket = containerd_dir / "containerd.sock"
    containerd = launch(
        "containerd", ["containerd", "--config", str(containerd_config(containerd_dir, cni_dir / "net.d"))]
    )
    _wait(
        "containerd answered",
        lambda: (
            subprocess.run(
                ["ctr", "--address", str(socket), "version"], capture_output=True, check=False
            ).returncode
            == 0
        ),
        60,
        containerd.output,
    )
    import_image(socket, prepared.pause)
    import_image(socket, prepared.guard_image)
    kubelet_dir = workdir / "kubelet"
    kubelet = launch(
        "kubelet",
        [
            str(found["kubelet"]),
            f"--config={kubelet_config(kubelet_dir, kubelet_ca, socket, serving.free_port(host.GATEWAY))}",
            f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--root-dir={kubelet_dir / 'root'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={host.GATEWAY}",
            "--v=1",
        ],
    )
    launch(
        "kube-proxy",
        [
            str(found["kube-proxy"]),
            f"--kubeconfig={kubeconfigs['kube-proxy']}",
            f"--hostname-override={NODE_NAME}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={host.POD_SUBNET}",
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            f"--metrics-bind-address=127.0.0.1:{serving.free_port()}",
            f"--healthz-bind-address=127.0.0.1:{serving.free_port()}",
            "--v=1",
        ],
    )
    target = NodeCluster(workdir, plane, started, copy)
    admin = kube.admin(target)
    _wait(f"node {NODE_NAME} Ready", lambda: _node_ready(admin), READY_TIMEOUT_SECONDS, kubelet.output)
    progress(f"node {NODE_NAME} Ready {time.monotonic() - started_at:.0f}s after the bridge")
    install(admin, objects)
    replicas = next(int(o["spec"]["replicas"]) for o in objects if o["kind"] == "Deployment")
    wait_for_rollout(admin, replicas)
    progress(
        f"the guard rolled out ({replicas} replicas) {time.monotonic() - started_at:.0f}s after the bridge"
    )
    return target


def _teardown(started: list[processes.Process], workdir: Path, kube_proxy: Path, progress: Progress) -> None:
    """The kubelet first (no restarts of what we kill), the containers, then everything else."""
    began = time.monotonic()
    by_name = {p.name: p for p in started}
    for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
        if name in by_name:
            by_name[name].stop()
    host.kill_cgroup_processes()
    socket = workdir / "containerd" / "containerd.sock"
    if "containerd" in by_name and by_name["containerd"].alive():
        with contextlib.suppress(images.ImageError):
            for task in ctr(socket, "tasks", "list", "--quiet").split():
                with contextlib.suppress(images.ImageError):
                    ctr(socket, "tasks", "delete", "--force", task)
        by_name["containerd"].stop()
    host.kill_processes_mentioning(str(workdir))
    if "kube-proxy" in by_name:  # its own rules; host.Snapshot.restore removes anything else new
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, check=False, timeout=60)
    progress(f"node stopped in {time.monotonic() - began:.0f}s")
