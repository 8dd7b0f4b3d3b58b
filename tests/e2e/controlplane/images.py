"""The images a real node runs, made on this machine without a registry, cached, loaded into containerd.

- The sandbox ("pause") image: ``build/pause/linux/pause.c`` from the same ``k8s.io/kubernetes``
  module as the binaries, compiled static (``gcc -Os -static``, as its Makefile does) and written as a
  one-layer image archive named ``registry.k8s.io/pause:<tag>`` (containerd's ``sandbox_image``).
- The guard's image, built from the project's own ``Dockerfile`` (no second recipe) by a Docker
  engine from Debian (``docker.io``) that the suite starts for the build only, with its own data
  root, socket and cgroup parent, no bridge and no iptables, and stops afterwards. The legacy builder
  (``DOCKER_BUILDKIT=0``): BuildKit would fetch the ``# syntax`` frontend from Docker Hub. ``RUN``
  steps use the host's network (``--network host``): with no bridge that is how ``pip install``
  reaches PyPI, through the host's resolver and proxy settings.
- The Dockerfile's ``FROM python:<PYTHON_VERSION>-slim`` cannot be pulled without a registry, so a
  stand-in with that exact name is made from Debian packages (``debootstrap --variant=minbase`` with
  ``python3``, ``python3-venv``, ``python-is-python3``), which is why the Dockerfile's default
  ``PYTHON_VERSION`` is Debian bookworm's 3.11. The stand-in trusts the host's CA bundle (copied to
  ``/etc/ssl/certs/ca-certificates.crt``, where Debian's pip looks), so a TLS-intercepting proxy in
  front of PyPI works as it does on the host.

Everything is cached under ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/images/``: the base's root
file system (by Debian suite and Python version), the pause archive (by Kubernetes version) and the
guard's archive (by a digest of every file the Dockerfile copies, the Dockerfile and the base), so a
warm run starts no Docker engine at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import gotools, reviews
from tests.e2e.controlplane import host

Progress = Callable[[str], None]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PAUSE_TAG = "3.10.1"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_TAG}"
DOCKER = "/usr/bin/docker"  # Debian's client, the same release as its dockerd
DOCKERD = "/usr/sbin/dockerd"
BUILD_TIMEOUT_SECONDS = 20 * 60
KEEP_GUARD_ARCHIVES = 3  # about 380 MB each
# What the Dockerfile's COPY lines read (keep in step with .dockerignore).
IMAGE_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "webhook", "rules")


class ImageError(Exception):
    """An image could not be made; the message says which step failed and how."""


def images_dir() -> Path:
    path = gotools.cache_root() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder of ``name`` at a time across sessions (like ``gotools.ensure``)."""
    with (images_dir() / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run(command: list[str], what: str, timeout: float = BUILD_TIMEOUT_SECONDS, **kwargs: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise ImageError(f"{what} failed ({result.returncode}): {' '.join(command)}\n{tail}")
    return str(result.stdout)


# --- image archives ------------------------------------------------------------------------------


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def write_archive(
    path: Path, reference: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]
) -> None:
    """A one-layer image in the ``docker save`` layout, which ``ctr images import`` reads."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, (data, mode) in files.items():
            _add(tar, name, data, mode)
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}]
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tarfile.open(partial, mode="w") as tar:
        _add(tar, f"{diff_id}/layer.tar", layer_bytes)
        _add(tar, config_name, config)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(partial, path)


def kubernetes_module_dir(module_dir: Path) -> Path:
    """Where the Go module cache holds the ``k8s.io/kubernetes`` release ``module_dir`` pins."""
    version = gotools.module_version(module_dir, "k8s.io/kubernetes")
    go = shutil.which("go") or "go"
    out = run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], "go mod download", cwd=module_dir
    )
    return Path(json.loads(out)["Dir"])


def pause_archive(module_dir: Path, progress: Progress) -> Path:
    """The sandbox image, compiled from the pinned Kubernetes release's ``pause.c``."""
    target = images_dir() / f"pause-{PAUSE_TAG}.tar"
    if target.exists():
        return target
    with locked(target.name):
        if target.exists():
            return target
        source = kubernetes_module_dir(module_dir) / "build" / "pause" / "linux" / "pause.c"
        progress(f"compiling {PAUSE_IMAGE} from {source}")
        with tempfile.TemporaryDirectory() as scratch:
            binary = Path(scratch) / "pause"
            run(
                [
                    "gcc",
                    "-Os",
                    "-Wall",
                    "-Werror",
                    "-static",
                    f"-DVERSION=v{PAUSE_TAG}-e2e",
                    "-o",
                    str(binary),
                    str(source),
                ],
                "compiling pause.c",
            )
            run(["strip", str(binary)], "strip pause")
            write_archive(target, PAUSE_IMAGE, {"pause": (binary.read_bytes(), 0o755)}, ["/pause"])
    return target


# --- the guard's image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    """What the project's Dockerfile builds on: ``FROM`` with its ``ARG`` default filled in."""

    base: str  # e.g. python:3.11-slim
    python_version: str

    @staticmethod
    def read(path: Path = reviews.ROOT / "Dockerfile") -> Dockerfile:
        text = path.read_text()
        arg = re.search(r"^ARG PYTHON_VERSION=(\S+)", text, re.MULTILINE)
        first = re.search(r"^FROM (\S+)", text, re.MULTILINE)
        if arg is None or first is None:
            raise ImageError(f"{path}: expected 'ARG PYTHON_VERSION=<x.y>' and a 'FROM' line")
        version = arg.group(1)
        return Dockerfile(first.group(1).replace("${PYTHON_VERSION}", version), version)


def debian_python() -> str:
    """The Python version Debian's ``python3`` has on this host's suite (bookworm: 3.11)."""
    found = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", "python3"], capture_output=True, text=True, check=False
    ).stdout
    version = re.search(r"^Version: (\d+\.\d+)", found, re.MULTILINE)
    return version.group(1) if version else ""


def base_rootfs(dockerfile: Dockerfile, progress: Progress) -> Path:
    """A root file system standing in for ``dockerfile.base``, made from Debian packages once."""
    target = images_dir() / f"base-{DEBIAN_SUITE}-python{dockerfile.python_version}.tar"
    if target.exists():
        return target
    with locked(target.name):
        if target.exists():
            return target
        debian = debian_python()
        if debian and debian != dockerfile.python_version:
            raise ImageError(
                f"the Dockerfile builds on Python {dockerfile.python_version}, Debian {DEBIAN_SUITE} ships "
                f"{debian}: the local stand-in for {dockerfile.base} can only be made for {debian}"
            )
        progress(f"making a stand-in for {dockerfile.base} from Debian {DEBIAN_SUITE} packages (debootstrap)")
        with tempfile.TemporaryDirectory(dir=images_dir()) as scratch:
            root = Path(scratch) / "rootfs"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    DEBIAN_SUITE,
                    str(root),
                    DEBIAN_MIRROR,
                ],
                "debootstrap",
            )
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            if HOST_CA_BUNDLE.exists():
                shutil.copyfile(HOST_CA_BUNDLE, root / HOST_CA_BUNDLE.relative_to("/"))
            partial = target.with_name(f".{target.name}.partial")
            run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], "archiving the base")
            os.replace(partial, target)
    return target


def prune(keep: int) -> None:
    """Only the newest ``keep`` guard archives stay (one per source tree state; worktrees differ)."""
    archives = sorted(images_dir().glob("agent-guard-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)


def image_digest(dockerfile: Dockerfile) -> str:
    digest = hashlib.sha256(f"{dockerfile.base}\n".encode())
    for name in IMAGE_INPUTS:
        path = reviews.ROOT / name
        files = (
            [path]
            if path.is_file()
            else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        )
        for file in files:
            digest.update(str(file.relative_to(reviews.ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class DockerEngine:
    """A dockerd of the suite's own: data root, socket and cgroup parent in a scratch directory."""

    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def cgroup(self) -> str:
        return f"{host.BUILD_CGROUP_PREFIX}-{self.directory.name}"

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    def client(self, *arguments: str) -> list[str]:
        return [DOCKER, "--host", f"unix://{self.socket}", *arguments]

    def start(self) -> None:
        log = (self.directory / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            [
                DOCKERD,
                f"--data-root={self.directory / 'data'}",
                f"--exec-root={self.directory / 'exec'}",
                f"--pidfile={self.directory / 'dockerd.pid'}",
                f"--host=unix://{self.socket}",
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                f"--cgroup-parent=/{self.cgroup}",
                "--exec-opt=native.cgroupdriver=cgroupfs",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if subprocess.run(self.client("version"), capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.3)
        self.stop()
        text = (self.directory / "dockerd.log").read_text(errors="replace")
        raise ImageError("dockerd did not start:\n" + "\n".join(text.splitlines()[-20:]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        host.kill_processes_mentioning(str(self.directory))  # its containerd and shims, if any are left


def guard_archive(reference: str, progress: Progress) -> Path:
    """The guard's image ``reference`` built from the Dockerfile, as a ``docker save`` archive."""
    dockerfile = Dockerfile.read()
    target = images_dir() / f"agent-guard-{image_digest(dockerfile)}.tar"
    if target.exists():
        return target
    with locked("agent-guard"):
        if target.exists():
            return target
        base = base_rootfs(dockerfile, progress)
        progress(f"building {reference} from {reviews.ROOT / 'Dockerfile'} with a local dockerd")
        started = time.monotonic()
        with (
            host.exclusive(progress),
            tempfile.TemporaryDirectory(prefix="kag-docker-") as scratch,
        ):
            engine = DockerEngine(Path(scratch))
            # dockerd writes outside its directories too (/run/docker, /etc/docker/key.json, shim
            # sockets in /run/containerd, cgroups): undone and checked like the node's changes.
            snapshot = host.Snapshot.take(Path(scratch), cgroup=engine.cgroup)
            try:
                engine.start()
                run(
                    engine.client(
                        "import",
                        "--change",
                        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--change",
                        'CMD ["python3"]',
                        str(base),
                        dockerfile.base,
                    ),
                    f"docker import of the stand-in {dockerfile.base}",
                )
                run(
                    engine.client("build", "--network", "host", "--tag", reference, str(reviews.ROOT)),
                    f"docker build of {reference}",
                    env={**os.environ, "DOCKER_BUILDKIT": "0"},
                )
                partial = target.with_name(f".{target.name}.partial")
                run(engine.client("save", "--output", str(partial), reference), "docker save")
                os.replace(partial, target)
                prune(keep=KEEP_GUARD_ARCHIVES)
            finally:
                engine.stop()
                snapshot.restore()
                leftovers = snapshot.leftovers()
            if leftovers:
                raise ImageError("the image build left the host changed:\n  " + "\n  ".join(leftovers))
        progress(f"built {reference} in {time.monotonic() - started:.0f}s")
    return target
