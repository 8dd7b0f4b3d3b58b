"""Build a Go program from the Go module proxy once, cache it, reuse it.

Several parts of the project need a Go binary that nobody has to install by hand: the end-to-end suite
(kube-apiserver and etcd, ``tests/e2e/controlplane/binaries.py``), the manifest tests (kustomize and
helm, ``tests/manifests/kustomize_binary.py``, ``helm_binary.py``) and ``make bench`` (its load
generator, ``bench/run.py``). Each describes its binary as a ``Tool`` (the small Go module that pins it,
the package to build, where the result is cached) and calls ``ensure``; an upstream tool pinned by a
``tool`` directive is a ``Pinned``, which makes that ``Tool`` from the pinned version.

Everything lands under ``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/``. Two sessions may build at
once (two worktrees, ``make e2e`` next to ``make demo``): the build runs under an exclusive file lock
next to the target, writes a temporary file and renames it into place, so a reader never sees half a
binary and the second builder simply finds the first one's result. The build log stays next to the
binary; a failure quotes its tail.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_SECONDS = 20 * 60
Progress = Callable[[str], None]


class BuildError(Exception):
    """A binary could not be built; the message says why and where the build log is."""


class GoMissing(BuildError):
    """No Go toolchain on PATH (and no cached binary)."""


@dataclass(frozen=True)
class Tool:
    name: str  # the binary's name in messages
    module_dir: Path  # the Go module that pins it; `go build` runs here
    package: str  # the main package to build ("." for the module's own sources)
    target: Path  # where the binary is cached
    purpose: str  # who needs it, for the "install Go" message
    ldflags: str = "-s -w"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-agent-guard"


def module_version(module_dir: Path, requirement: str) -> str:
    """The version ``module_dir/go.mod`` pins for ``requirement`` (it names the cache entry)."""
    go_mod = module_dir / "go.mod"
    found = re.search(rf"^\s*{re.escape(requirement)}\s+(v\S+)", go_mod.read_text(), re.MULTILINE)
    if found is None:
        raise BuildError(f"{go_mod}: no version for {requirement}")
    return found.group(1)


def go_version(module_dir: Path) -> str:
    """The minimum Go version of the module (its ``go`` directive)."""
    found = re.search(r"^go\s+(\S+)", (module_dir / "go.mod").read_text(), re.MULTILINE)
    return found.group(1) if found is not None else "1.22"


def source_digest(directory: Path, length: int = 12) -> str:
    """A short hash of the files in ``directory``: a cache key for programs we write ourselves."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:length]


def usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def go_binary(tool: Tool) -> str:
    go = shutil.which("go")
    if go is None:
        raise GoMissing(
            f"Go is not installed (no `go` on PATH): {tool.purpose}; "
            f"install Go >= {go_version(tool.module_dir)} from https://go.dev/dl/"
        )
    return go


def ensure(tool: Tool, progress: Progress | None = None) -> Path:
    """The cached binary, built first if it is not there yet."""
    if usable(tool.target):
        return tool.target
    go = go_binary(tool)
    tool.target.parent.mkdir(parents=True, exist_ok=True)
    with (tool.target.parent / f".{tool.target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder finishes first; then we reuse its result
        if usable(tool.target):
            return tool.target
        _build(go, tool, progress or (lambda message: None))
    return tool.target


def _build(go: str, tool: Tool, progress: Progress) -> None:
    target = tool.target
    log = target.parent / f"{target.name}.build.log"
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    command = [go, "build", "-trimpath", "-ldflags", tool.ldflags, "-o", str(partial), tool.package]
    progress(f"building {tool.name} into {target} (once; log: {log})")
    started = time.monotonic()
    try:
        with log.open("wb") as sink:
            sink.write(f"$ (cd {tool.module_dir} && {' '.join(command)})\n".encode())
            sink.flush()
            result = subprocess.run(
                command,
                cwd=tool.module_dir,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=tool.timeout_seconds,
                check=False,
            )
        if result.returncode != 0 or not usable(partial):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise BuildError(
                f"building {tool.name} failed (exit {result.returncode}); full log: {log}\n{tail}"
            )
        os.replace(partial, target)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"building {tool.name} took longer than {tool.timeout_seconds:.0f}s; log: {log}"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    progress(f"built {tool.name} in {time.monotonic() - started:.0f}s")


@dataclass(frozen=True)
class Pinned:
    """An upstream Go program pinned by a tiny module of ours (a ``go.mod`` with a ``tool`` directive,
    in a folder named after the program: ``helm/go.mod`` pins helm): its version is the one ``go.mod``
    requires of ``requirement``, and it is cached once per version as
    ``<cache_root>/tools/<name>-<version>``, so a new pin builds anew and an old one is still found."""

    module_dir: Path  # the Go module that pins it; its folder name is the program's name
    requirement: str  # the module whose pinned version names the cache entry
    package: str  # the main package to build
    purpose: str  # who needs it, for the "install Go" message
    ldflags: str = "-s -w"  # ``{version}`` is replaced by the pinned version

    @property
    def name(self) -> str:
        return self.module_dir.name

    def version(self) -> str:
        return module_version(self.module_dir, self.requirement)

    def cached_path(self) -> Path:
        return cache_root() / "tools" / f"{self.name}-{self.version()}"

    def tool(self) -> Tool:
        version = self.version()
        return Tool(
            name=f"{self.name} {version}",
            module_dir=self.module_dir,
            package=self.package,
            target=self.cached_path(),
            purpose=self.purpose,
            ldflags=self.ldflags.format(version=version),
        )

    def ensure(self, progress: Progress | None = None) -> Path:
        """The cached binary, built first if it is not there yet."""
        return ensure(self.tool(), progress)
