"""Build kustomize from the Go module proxy once, cache it, reuse it.

kustomize is pinned by the tiny Go module next to this file (``kustomize/go.mod``, a ``tool``
directive) and cached as ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/tools/kustomize-<version>``,
next to the control plane binaries of the end-to-end suite. The build runs under an exclusive file
lock, into a temporary file renamed into place, so parallel sessions (two worktrees, ``make test``
twice) never see a half-written binary and the second one reuses the first one's result.

``kubectl kustomize`` is not used on purpose: kubectl is not on every machine, and its embedded
kustomize version is whatever that kubectl was built with.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

MODULE = Path(__file__).resolve().parent / "kustomize"
PACKAGE = "sigs.k8s.io/kustomize/kustomize/v5"
BUILD_TIMEOUT_SECONDS = 20 * 60


class BuildError(Exception):
    """kustomize could not be built; the message says why and where the log is."""


class GoMissing(BuildError):
    """No Go toolchain on PATH."""


def version() -> str:
    found = re.search(rf"^\s*{re.escape(PACKAGE)}\s+(v\S+)", (MODULE / "go.mod").read_text(), re.MULTILINE)
    if found is None:
        raise BuildError(f"{MODULE / 'go.mod'}: no version for {PACKAGE}")
    return found.group(1)


def cached_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-agent-guard" / "tools" / f"kustomize-{version()}"


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def ensure() -> Path:
    """The cached kustomize binary, built first if it is not there yet."""
    target = cached_path()
    if _usable(target):
        return target
    go = shutil.which("go")
    if go is None:
        raise GoMissing(
            "Go is not installed (no `go` on PATH): the manifest tests build kustomize from the Go module "
            "proxy; install Go >= 1.26 from https://go.dev/dl/"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(target):  # a concurrent builder finished first
            return target
        log = target.parent / f"{target.name}.build.log"
        partial = target.parent / f".{target.name}.{os.getpid()}.partial"
        command = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), PACKAGE]
        try:
            with log.open("wb") as sink:
                result = subprocess.run(
                    command,
                    cwd=MODULE,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_SECONDS,
                    check=False,
                )
            if result.returncode != 0 or not _usable(partial):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise BuildError(f"building kustomize failed (exit {result.returncode}); log: {log}\n{tail}")
            os.replace(partial, target)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"building kustomize took over {BUILD_TIMEOUT_SECONDS}s; log: {log}") from exc
        finally:
            partial.unlink(missing_ok=True)
    return target


def build(kustomize: Path, directory: Path) -> str:
    """``kustomize build directory``; raises BuildError with kustomize's own message."""
    result = subprocess.run(
        [str(kustomize), "build", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"kustomize build {directory} failed:\n{result.stderr}")
    return result.stdout
