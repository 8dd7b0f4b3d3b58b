"""Build kube-apiserver and etcd from the Go module proxy once, cache them, reuse them.

Each binary is built from its own tiny Go module kept next to this file (so the two dependency graphs
never mix) and cached as ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/<version>/<name>``. Two test
sessions may start at once (two worktrees, ``make e2e`` next to ``make demo``): the build runs under
an exclusive file lock, writes to a temporary file and renames it into place, so a reader never sees
a half-written binary and the second builder simply finds the first one's result.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT_SECONDS = 45 * 60


class BuildError(Exception):
    """A binary could not be built; the message says why and where the build log is."""


class GoMissing(BuildError):
    """No Go toolchain on PATH."""


@dataclass(frozen=True)
class Component:
    name: str  # the binary's file name
    module_dir: Path  # the Go module that pins it
    package: str  # the main package built from that module
    requirement: str  # the module path whose version names the cache directory

    @property
    def version(self) -> str:
        text = (self.module_dir / "go.mod").read_text()
        found = re.search(rf"^\s*{re.escape(self.requirement)}\s+(v\S+)", text, re.MULTILINE)
        if found is None:
            raise BuildError(f"{self.module_dir / 'go.mod'}: no version for {self.requirement}")
        return found.group(1)

    def ldflags(self) -> str:
        flags = "-s -w"
        if self.name == "kube-apiserver":
            # Without it the binary reports v0.0.0-master and clients warn about version skew.
            flags += f" -X k8s.io/component-base/version.gitVersion={self.version}"
        return flags


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


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-agent-guard"


def cached_path(component: Component) -> Path:
    return cache_root() / component.version / component.name


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoMissing(
            "Go is not installed (no `go` on PATH): the end-to-end suite builds kube-apiserver and etcd "
            "from the Go module proxy; install Go >= 1.24 from https://go.dev/dl/ and run `make e2e` again"
        )
    return go


def ensure(component: Component, progress: Callable[[str], None] = print) -> Path:
    """The cached binary, built first if it is not there yet."""
    target = cached_path(component)
    if _usable(target):
        return target
    go = go_binary()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{component.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder finishes first; then we reuse its result
        if _usable(target):
            return target
        _build(go, component, target, progress)
    return target


def _build(go: str, component: Component, target: Path, progress: Callable[[str], None]) -> None:
    log = target.parent / f"{component.name}.build.log"
    partial = target.parent / f".{component.name}.{os.getpid()}.partial"
    command = [go, "build", "-trimpath", "-ldflags", component.ldflags(), "-o", str(partial)]
    command.append(component.package)
    progress(
        f"building {component.name} {component.version} into {target} "
        f"(once per version; a few minutes; log: {log})"
    )
    started = time.monotonic()
    try:
        with log.open("wb") as sink:
            sink.write(f"$ (cd {component.module_dir} && {' '.join(command)})\n".encode())
            sink.flush()
            result = subprocess.run(
                command,
                cwd=component.module_dir,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_SECONDS,
                check=False,
            )
        if result.returncode != 0 or not _usable(partial):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise BuildError(
                f"building {component.name} {component.version} failed (exit {result.returncode}); "
                f"full log: {log}\n{tail}"
            )
        os.replace(partial, target)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"building {component.name} took longer than {BUILD_TIMEOUT_SECONDS}s; log: {log}"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    progress(f"built {component.name} {component.version} in {time.monotonic() - started:.0f}s")


def ensure_all(progress: Callable[[str], None] = print) -> dict[str, Path]:
    return {component.name: ensure(component, progress) for component in COMPONENTS}
