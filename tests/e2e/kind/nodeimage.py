"""A kind node image made on this machine, with no registry: ``make e2e-kind``'s offline path.

``kind build node-image`` cannot be used as is here: besides the Kubernetes images it is given, it
pulls kindnetd and the local-path provisioner, which no registry here serves and the Go module proxy
cannot build. So the suite assembles the same thing kind's builder makes, from the same parts:

- **the base** (kind's ``images/base``): a root file system from Debian packages (systemd, containerd,
  runc, the reference CNI plugins, iptables, ...) with kind's ``images/base/files`` taken from the kind
  module, the same service set-up as kind's base Dockerfile, ``ctr`` and ``crictl`` built from their
  modules (kind v0.30 calls ``ctr`` features Debian's 1.6 lacks), and containerd's configuration with
  ``restrict_oom_score_adj = true`` (this host's bounding set lacks CAP_SYS_RESOURCE, so containerd may
  not lower a sandbox's OOM score) and the sandbox image this release's kubeadm names;
- **the node**: kubeadm, kubelet, kubectl in ``/usr/bin``, ``/kind/version``, and the images kubeadm
  runs, imported into the node's containerd: kube-apiserver, kube-controller-manager, kube-scheduler,
  kube-proxy (the suite's own v1.34.4 builds), etcd (the suite's etcd build, named by its own version:
  the cluster configuration points kubeadm at that tag), CoreDNS (built from its module) and pause
  (compiled from the release's ``pause.c``). The component images share one base layer, the node's
  root file system (their binaries link glibc; kube-proxy runs iptables).

Both are cached under ``~/.cache/kube-agent-guard/images/`` by a digest of their inputs; a warm run
only ``docker load``s the node archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests import gotools
from tests.e2e.controlplane import binaries, images
from tests.e2e.kind import tools

Progress = Callable[[str], None]
KUBERNETES = binaries.KUBE_APISERVER.version  # v1.34.4: the suite's one pinned release
NODE_PACKAGES = (
    "systemd",
    "dbus",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "procps",
    "jq",  # kind's mount-product-files.sh, a createContainer hook of every container
    "containerd",
    "runc",
    "containernetworking-plugins",
)
ETCD_TAG = binaries.ETCD.version  # e.g. v3.6.16 -> registry.k8s.io/etcd:v3.6.16
COREDNS_TAG = tools.COREDNS.version


def kind_module_dir() -> Path:
    go = shutil.which("go") or "go"
    out = images.run(
        [go, "mod", "download", "-json", f"sigs.k8s.io/kind@{tools.KIND.version}"],
        "go mod download kind",
        cwd=tools.KIND.module_dir,
    )
    return Path(json.loads(out)["Dir"])


def _digest(*parts: str | bytes | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = [part] if part.is_file() else sorted(p for p in part.rglob("*") if p.is_file())
            for file in files:
                digest.update(str(file).encode() + file.read_bytes())
        else:
            digest.update(part if isinstance(part, bytes) else part.encode())
    return digest.hexdigest()[:16]


def containerd_config(text: str) -> str:
    """kind's containerd configuration, adapted to this host (see the module's docstring)."""
    text = text.replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
    text = re.sub(r'sandbox_image = "[^"]*"', f'sandbox_image = "{images.PAUSE_IMAGE}"', text)
    if "restrict_oom_score_adj = true" not in text or images.PAUSE_IMAGE not in text:
        raise images.ImageError("kind's containerd config.toml changed: restrict_oom_score_adj/sandbox_image")
    return text


def base_rootfs(progress: Progress) -> Path:
    """kind's base image, made from Debian packages, as a root file system archive."""
    kind_dir = kind_module_dir()
    files = kind_dir / "images" / "base" / "files"
    ctr, crictl = tools.ensure(tools.CTR, progress), tools.ensure(tools.CRICTL, progress)
    key = _digest(" ".join(NODE_PACKAGES), tools.KIND.version, tools.CTR.version, tools.CRICTL.version)
    target = images.images_dir() / f"kind-base-{images.DEBIAN_SUITE}-{key}.tar"
    if target.exists():
        return target
    with images.locked(target.name):
        if target.exists():
            return target
        progress(f"making kind's base from Debian {images.DEBIAN_SUITE} packages (debootstrap)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=images.images_dir()) as scratch:
            root = Path(scratch) / "rootfs"
            images.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(NODE_PACKAGES)}",
                    images.DEBIAN_SUITE,
                    str(root),
                    images.DEBIAN_MIRROR,
                ],
                "debootstrap of kind's base",
            )
            _set_up_base(root, files, ctr, crictl)
            partial = target.with_name(f".{target.name}.partial")
            images.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], "archiving")
            os.replace(partial, target)
        progress(f"made kind's base in {time.monotonic() - started:.0f}s")
    return target


def _set_up_base(root: Path, files: Path, ctr: Path, crictl: Path) -> None:
    """What kind's base Dockerfile does after installing its packages."""
    for source in files.rglob("*"):
        if source.is_file():
            destination = root / source.relative_to(files)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            executable = "bin" in source.relative_to(files).parts
            destination.chmod(0o755 if executable else 0o644)
    config = root / "etc" / "containerd" / "config.toml"
    config.write_text(containerd_config(config.read_text()))
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    for wants in (
        "lib/systemd/system/multi-user.target.wants",
        "etc/systemd/system/multi-user.target.wants",
        "lib/systemd/system/local-fs.target.wants",
        "lib/systemd/system/basic.target.wants",
    ):
        for entry in (root / wants).glob("*"):
            entry.unlink()
    for pattern in ("*udev*", "*initctl*"):
        for entry in (root / "lib/systemd/system/sockets.target.wants").glob(pattern):
            entry.unlink()
    for entry in (root / "etc/systemd/system").glob("*.wants/*"):
        entry.unlink()
    (root / "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service").unlink(missing_ok=True)
    with (root / "etc/systemd/journald.conf").open("a") as journald:
        journald.write("ReadKMsg=no\n")
    init = root / "sbin" / "init"
    init.unlink(missing_ok=True)
    init.symlink_to("/lib/systemd/systemd")
    for service in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
        images.run(["systemctl", f"--root={root}", "enable", service], f"systemctl enable {service}")
    images.run(["systemctl", f"--root={root}", "mask", "systemd-binfmt.service"], "systemctl mask")
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    local = root / "usr/local/bin"
    shutil.copyfile(ctr, local / "ctr")
    shutil.copyfile(crictl, local / "crictl")
    (local / "ctr").chmod(0o755)
    (local / "crictl").chmod(0o755)
    (local / "containerd").symlink_to("/usr/bin/containerd")  # kind's containerd.service runs this
    (root / "opt/cni").mkdir(parents=True, exist_ok=True)
    (root / "opt/cni/bin").symlink_to("/usr/lib/cni")  # containerd's default CNI bin_dir
    for mount_point in ("etc/kubernetes/agent-guard", "kind/manifests"):
        (root / mount_point).mkdir(parents=True, exist_ok=True)


def _binary(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), 0o755


def component_archive(base: Path, progress: Progress) -> Path:
    """Every image kubeadm (and CRI) runs, in one archive over the shared base layer."""
    found = binaries.ensure_all(
        progress,
        (
            binaries.ETCD,
            binaries.KUBE_APISERVER,
            binaries.KUBE_CONTROLLER_MANAGER,
            binaries.KUBE_SCHEDULER,
            binaries.KUBE_PROXY,
        ),
    )
    coredns = tools.ensure(tools.COREDNS, progress)
    inputs = [*found.values(), coredns]
    key = _digest(base.name, *(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in inputs))
    target = images.images_dir() / f"kind-components-{KUBERNETES}-{key}.tar"
    if target.exists():
        return target
    with images.locked(target.name):
        if target.exists():
            return target
        progress(f"writing the control plane's images ({KUBERNETES}) over kind's base")
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        archived = [
            images.ArchivedImage(
                f"registry.k8s.io/{name}:{KUBERNETES}",
                {f"usr/local/bin/{name}": _binary(found[name])},
                [f"/usr/local/bin/{name}"],
                user="0",
                env=(path,),
            )
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        ]
        archived.append(
            images.ArchivedImage(
                f"registry.k8s.io/etcd:{ETCD_TAG}",
                {"usr/local/bin/etcd": _binary(found["etcd"])},
                ["/usr/local/bin/etcd"],
                user="0",
                env=(path,),
            )
        )
        archived.append(
            images.ArchivedImage(
                f"registry.k8s.io/coredns/coredns:{COREDNS_TAG}",
                {"coredns": _binary(coredns)},
                ["/coredns"],
                user="0",
                env=(path,),
            )
        )
        images.write_images(target, archived, base_layer=base)
    return target


def node_archive(docker: Callable[..., list[str]], progress: Progress) -> tuple[Path, str]:
    """The node image as a ``docker save`` archive and its reference, built with ``docker`` (a function
    that turns arguments into a client command line for the engine in use)."""
    base = base_rootfs(progress)
    components = component_archive(base, progress)
    pause = images.pause_archive(binaries.KUBE_APISERVER.module_dir, progress)
    node_binaries = {
        name: binaries.ensure(component, progress)
        for name, component in (
            ("kubeadm", binaries.KUBEADM),
            ("kubelet", binaries.KUBELET),
            ("kubectl", binaries.KUBECTL),
        )
    }
    key = _digest(
        base.name, components.name, pause.name, *(f"{p.stat().st_mtime_ns}" for p in node_binaries.values())
    )
    reference = f"kube-agent-guard/kind-node:{KUBERNETES}-{key}"
    target = images.images_dir() / f"kind-node-{KUBERNETES}-{key}.tar"
    if target.exists():
        return target, reference
    with images.locked(target.name):
        if target.exists():
            return target, reference
        progress(f"building the node image {reference}")
        started = time.monotonic()
        base_ref = f"kube-agent-guard/kind-base:{base.stem}"
        images.run(docker("import", str(base), base_ref), "docker import of kind's base")
        name = f"kag-kind-build-{os.getpid()}"
        images.run(
            docker(
                "run",
                "-d",
                "--name",
                name,
                "--entrypoint=sleep",
                "--security-opt",
                "seccomp=unconfined",
                base_ref,
                "infinity",
            ),
            "starting the node image's build container",
        )
        try:
            for binary, path in node_binaries.items():
                images.run(docker("cp", str(path), f"{name}:/usr/bin/{binary}"), f"docker cp {binary}")
            with tempfile.TemporaryDirectory() as scratch:
                version = Path(scratch) / "version"
                version.write_text(KUBERNETES + "\n")
                images.run(docker("cp", str(version), f"{name}:/kind/version"), "docker cp /kind/version")
                spec = json.loads(images.run(docker("exec", name, "ctr", "oci", "spec"), "ctr oci spec"))
                spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
                    {"path": "/kind/bin/mount-product-files.sh"}
                )
                spec["process"].pop("rlimits", None)
                cri_base = Path(scratch) / "cri-base.json"
                cri_base.write_text(json.dumps(spec, indent=2))
                images.run(docker("cp", str(cri_base), f"{name}:/etc/containerd/cri-base.json"), "docker cp")
            images.run(docker("exec", "-d", name, "containerd"), "starting containerd in the build container")
            deadline = time.monotonic() + 60
            while subprocess.run(
                docker("exec", name, "ctr", "version"), capture_output=True, check=False
            ).returncode:
                if time.monotonic() > deadline:
                    raise images.ImageError("containerd did not start in the node image's build container")
                time.sleep(0.5)
            for archive in (components, pause):
                images.run(docker("cp", str(archive), f"{name}:/images.tar"), f"docker cp {archive.name}")
                images.run(
                    docker(
                        "exec",
                        name,
                        "ctr",
                        "--namespace=k8s.io",
                        "images",
                        "import",
                        "--label=io.cri-containerd.pinned=pinned",
                        "--all-platforms",
                        "--no-unpack",
                        "/images.tar",
                    ),
                    f"importing {archive.name}",
                )
                images.run(docker("exec", name, "rm", "/images.tar"), "rm /images.tar")
            images.run(docker("exec", name, "pkill", "containerd"), "stopping containerd")
            time.sleep(1)
            images.run(
                docker(
                    "commit",
                    "--change",
                    'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                    "--change",
                    "ENV container=docker",  # Docker 20.10 commits take no STOPSIGNAL; kind uses rm -f
                    name,
                    reference,
                ),
                "docker commit of the node image",
            )
        finally:
            subprocess.run(docker("rm", "-f", "-v", name), capture_output=True, check=False)
        partial = target.with_name(f".{target.name}.partial")
        images.run(docker("save", "--output", str(partial), reference), "docker save of the node image")
        os.replace(partial, target)
        progress(f"built the node image in {time.monotonic() - started:.0f}s")
    return target, reference


def main() -> int:
    """``python -m tests.e2e.kind.nodeimage`` (DOCKER_HOST set): build or reuse the node image, load it
    into the engine, print its reference."""

    def docker(*arguments: str) -> list[str]:
        return [shutil.which("docker") or images.DOCKER, *arguments]

    def progress(message: str) -> None:
        print(f"e2e-kind: {message}", file=sys.stderr)

    try:
        archive, reference = node_archive(docker, progress)
        present = subprocess.run(docker("image", "inspect", reference), capture_output=True, check=False)
        if present.returncode != 0:
            images.run(docker("load", "--input", str(archive)), "docker load of the node image")
    except (images.ImageError, gotools.BuildError) as error:
        print(f"e2e-kind: {error}", file=sys.stderr)
        return 1
    print(reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
