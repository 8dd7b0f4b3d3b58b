"""The MCP servers agents really use, installed by the suite, and a real MCP client to drive them.

Two servers from the npm registry, pinned (with every transitive package) by ``npm/package-lock.json``:

- ``kubernetes-mcp-server`` (containers/kubernetes-mcp-server): a Go binary shipped inside the npm
  package ``kubernetes-mcp-server-linux-amd64``; it talks to the apiserver with client-go.
- ``mcp-server-kubernetes`` (Flux159/mcp-server-kubernetes): Node; most tools run ``kubectl``, so the
  suite puts the kubectl it builds from the pinned Kubernetes module (``controlplane.binaries.KUBECTL``)
  first on its ``PATH``.

``npm install`` (with the lock file) runs once into
``${XDG_CACHE_HOME:-~/.cache}/kube-agent-guard/mcp-servers/<lock digest>/`` (never into the
repository), under a lock and renamed into place like the Go builds, so two sessions
never install over each other. Both servers speak MCP over stdio only: no port is opened.

The client is the official MCP SDK for Python (``mcp``): ``stdio_client`` starts the server with the
agent's kubeconfig, ``ClientSession`` lists its tools and calls them. ``Answer`` is what the model would
read: the tool result's text, or the JSON-RPC error's message when the server answers with an error
instead of a result (mcp-server-kubernetes does that for a failed kubectl).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tests import gotools

HERE = Path(__file__).resolve().parent
NPM_DIR = HERE / "npm"
INSTALL_TIMEOUT_SECONDS = 15 * 60
CALL_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 60.0
Progress = Callable[[str], None]


class InstallError(Exception):
    """The MCP servers could not be installed; the message says why (and where the log is)."""


def install_dir() -> Path:
    """Where this lock file's packages live: a new lock file is a new directory."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NPM_DIR / name).read_bytes())
    return gotools.cache_root() / "mcp-servers" / digest.hexdigest()[:12]


def pinned_version(package: str) -> str:
    """The version ``npm/package.json`` pins for ``package``."""
    pinned: dict[str, str] = json.loads((NPM_DIR / "package.json").read_text())["dependencies"]
    return pinned[package]


def _installed(directory: Path) -> bool:
    return (directory / ".complete").is_file()


def ensure_installed(progress: Progress | None = None) -> Path:
    """``npm/`` installed into the cache (once); returns the directory holding ``node_modules``.

    ``npm install`` with the lock file, not ``npm ci``: npm writes only this platform's entry of
    kubernetes-mcp-server's per-platform optional packages into the lock, and ``npm ci`` then refuses
    it as out of sync on every platform.
    """
    target = install_dir()
    if _installed(target):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(
            "npm is not installed (no `npm` on PATH): the MCP scenarios install their servers from the "
            "npm registry; install Node.js >= 18 with npm (Debian: apt-get install nodejs npm)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent installer finishes first; then we reuse its result
        if _installed(target):
            return target
        _install(npm, target, progress or (lambda message: None))
    return target


def _install(npm: str, target: Path, progress: Progress) -> None:
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    log = target.parent / f"{target.name}.install.log"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(NPM_DIR / name, partial / name)
    # --ignore-scripts: neither server needs an install script (the Go binary ships in its package).
    command = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=warn"]
    progress(f"installing the MCP servers into {target} (once; log: {log})")
    started = time.monotonic()
    try:
        with log.open("wb") as sink:
            result = subprocess.run(
                command,
                cwd=partial,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise InstallError(f"npm install failed (exit {result.returncode}); full log: {log}\n{tail}")
        (partial / ".complete").write_text(f"{time.monotonic() - started:.0f}s\n")
        shutil.rmtree(target, ignore_errors=True)  # a half-installed leftover of a killed run
        partial.rename(target)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"npm install took longer than {INSTALL_TIMEOUT_SECONDS}s; log: {log}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    progress(f"installed the MCP servers in {time.monotonic() - started:.0f}s")


@dataclass(frozen=True)
class FlagSet:
    """One way of starting a server: ``label`` names it in the matrix, the rest is how."""

    label: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Server:
    name: str  # the npm package
    flag_sets: tuple[FlagSet, ...]

    def parameters(
        self, root: Path, kubeconfig: Path, kubectl: Path, flags: FlagSet
    ) -> StdioServerParameters:
        """How an MCP host starts this server with the agent's kubeconfig (``root``: the npm install)."""
        modules = root / "node_modules"
        path = os.pathsep.join([str(kubectl.parent), "/usr/local/bin", "/usr/bin", "/bin"])
        env = {"PATH": path, "HOME": str(kubeconfig.parent), **dict(flags.env)}
        if self.name == KUBERNETES_MCP_SERVER.name:
            binary = (
                modules / "kubernetes-mcp-server-linux-amd64" / "bin" / "kubernetes-mcp-server-linux-amd64"
            )
            return StdioServerParameters(
                command=str(binary), args=["--kubeconfig", str(kubeconfig), *flags.args], env=env
            )
        node = shutil.which("node") or "node"
        env["KUBECONFIG"] = str(kubeconfig)
        script = modules / "mcp-server-kubernetes" / "dist" / "index.js"
        return StdioServerParameters(command=node, args=[str(script), *flags.args], env=env)


NO_FLAGS = "no flags"
KUBERNETES_MCP_SERVER = Server(
    "kubernetes-mcp-server",
    (
        FlagSet(NO_FLAGS),
        FlagSet("--disable-destructive", args=("--disable-destructive",)),
        FlagSet("--read-only", args=("--read-only",)),
    ),
)
MCP_SERVER_KUBERNETES = Server(
    "mcp-server-kubernetes",
    (
        FlagSet(NO_FLAGS),
        FlagSet("ALLOW_ONLY_NON_DESTRUCTIVE_TOOLS", env=(("ALLOW_ONLY_NON_DESTRUCTIVE_TOOLS", "true"),)),
        FlagSet("ALLOW_ONLY_READONLY_TOOLS", env=(("ALLOW_ONLY_READONLY_TOOLS", "true"),)),
    ),
)
SERVERS = (KUBERNETES_MCP_SERVER, MCP_SERVER_KUBERNETES)


def server_named(name: str) -> Server:
    return next(server for server in SERVERS if server.name == name)


@dataclass(frozen=True)
class Answer:
    """What the model reads after one tool call."""

    text: str
    is_error: bool  # a tool result flagged isError, or a JSON-RPC error
    via: str  # "result" or "json-rpc error"


def _text_of(result: Any) -> str:
    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else repr(item))
    return "\n".join(parts)


class Connection:
    """A started server and its MCP session (use ``connect``)."""

    def __init__(self, session: ClientSession, tools: frozenset[str]) -> None:
        self.session, self.tools = session, tools

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> Answer:
        try:
            result = await self.session.call_tool(
                tool, dict(arguments), read_timeout_seconds=CALL_TIMEOUT_SECONDS
            )
        except MCPError as exc:
            return Answer(str(exc), True, "json-rpc error")
        return Answer(_text_of(result), bool(result.is_error), "result")


@contextlib.asynccontextmanager
async def connect(parameters: StdioServerParameters, errlog: TextIO) -> AsyncIterator[Connection]:
    """Start the server, initialize the MCP session, list the tools; stop the server on exit."""
    async with (
        stdio_client(parameters, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(START_TIMEOUT_SECONDS):  # a server that never answers fails, not hangs
            await session.initialize()
            listed = await session.list_tools()
        yield Connection(session, frozenset(tool.name for tool in listed.tools))
