"""Run the app under uvicorn, TLS only, with hot reload and a graceful shutdown.

The SSL context is ours rather than uvicorn's so that the minimum protocol is explicit (TLS 1.2)
and so that certificates can be re-loaded into the same context while serving (``webhook.reload``).

Shutdown, in order: SIGTERM turns ``/readyz`` red and every answer gets ``Connection: close`` (the
apiserver's keep-alive connections move to other replicas); after ``shutdown_delay`` seconds the
listener closes; requests in flight get up to ``shutdown_timeout`` seconds to finish; exit 0.
A second SIGTERM or SIGINT skips the delay; a SIGINT during the drain forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import uvicorn
import uvloop

from webhook import (
    app,
    approvals_watch,
    certs,
    clientauth,
    decisionlog,
    engine,
    manifests,
    metrics,
    onewrite,
    policy,
    protocol,
    rbaccache,
    reload,
    tls,
)

log = logging.getLogger("agent-guard.server")

# The apiserver keeps webhook connections alive (Go's idle timeout is 90 s); closing ours first
# would race its next request onto a dying connection.
KEEP_ALIVE_SECONDS = 120
# A request (head and body) and a TLS handshake must be complete this many seconds after they
# start: twice the timeoutSeconds of the rendered webhook configuration (manifests.TIMEOUT_SECONDS,
# 5 s; the authorization webhook's is 3 s). The apiserver has given up on anything slower.
READ_TIMEOUT_SECONDS = 2.0 * manifests.TIMEOUT_SECONDS
# The apiserver sends a request head of a few hundred bytes; 16 KiB (h11's default limit, and
# Node's) leaves ample room and answers a longer head with 431 after 16 KiB, not hundreds of MiB.
MAX_HEAD_BYTES = 16 * 1024
# Connections per worker. Each costs a file descriptor and some 50 KiB of TLS and parser state; a
# few apiservers with their keep-alive pools need tens. Beyond this a new connection is closed.
MAX_CONNECTIONS = 512
# A dead worker is replaced at most once per this many seconds (see supervise).
RESPAWN_SECONDS = 1.0


class ServeError(Exception):
    """The server cannot start; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8443
    cert_dir: Path = Path("certs")
    rules: Path = Path("rules")
    mode: policy.GlobalMode | None = None
    max_body: int = app.DEFAULT_MAX_BODY
    log_level: str = "info"
    reload_interval: float = reload.DEFAULT_INTERVAL_SECONDS  # 0: no hot reload
    shutdown_delay: float = 0.0  # keep serving (not ready) this long after SIGTERM
    shutdown_timeout: int = 20  # then give requests in flight this long (seconds)
    workers: int = 1  # processes sharing the listening socket
    read_timeout: float = READ_TIMEOUT_SECONDS  # request head + body, and the TLS handshake
    max_connections: int = MAX_CONNECTIONS  # per worker
    client_ca: Path | None = None  # reviews only from clients with a certificate from this CA
    client_names: tuple[str, ...] = ()  # ... and (if any) one of these common names
    approvals: bool = False  # watch Approval objects (human approvals) in the guard's namespace
    kubeconfig: str | None = None  # for the approvals watch; None: the pod's ServiceAccount
    rbac_source: rbaccache.Source = rbaccache.NO_SOURCE  # none: guards judge RBAC by names only


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """One serving context for this pair (``webhook.tls.server_context``), or a ServeError."""
    return certificate_switch(cert_file, key_file).current


def certificate_switch(
    cert_file: Path, key_file: Path, configure: Callable[[ssl.SSLContext], None] | None = None
) -> tls.Switch:
    try:
        return tls.Switch(cert_file, key_file, configure)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from exc


def prepare_certs(cert_dir: Path) -> certs.Paths:
    """Use the pair in ``cert_dir``; create development certificates only when there is none at all."""
    paths = certs.Paths(cert_dir)
    if not any(p.exists() for p in (paths.ca, paths.cert, paths.key)):
        certs.generate(cert_dir)
        log.info("generated development certificates in %s (CA: %s)", cert_dir, paths.ca)
    elif not (paths.cert.is_file() and paths.key.is_file()):
        raise ServeError(f"{cert_dir}: has some certificate files but not both tls.crt and tls.key")
    return paths


def load_engine(settings: Settings, rbac: rbaccache.RbacCache | None = None) -> engine.Engine:
    try:
        return engine.compile_policy(settings.rules, settings.mode, rbac=rbac)
    except policy.PolicyError as exc:
        raise ServeError(f"invalid policy:\n{exc}") from exc


def uvicorn_config(asgi_app: Any, settings: Settings, context: ssl.SSLContext) -> uvicorn.Config:
    """Production uvicorn settings over our TLS context (shared with the benchmark floor)."""

    def _context(_: uvicorn.Config, __: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    _Loop.handshake_timeout = settings.read_timeout  # one server per process
    # One write per answer (webhook.onewrite) around the limits of GuardProtocol.
    http = onewrite.protocol(
        protocol.GuardProtocol.configured(settings.read_timeout, settings.max_connections, MAX_HEAD_BYTES)
    )
    return uvicorn.Config(
        asgi_app,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=_context,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
        date_header=False,  # nobody reads it; 37 bytes less on every answer
        proxy_headers=False,  # the apiserver connects directly: no forwarded headers to trust, no middleware
        log_config=None,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # Limits (module constants above say where each number comes from): GuardProtocol bounds the
        # request head and adds the read deadline and the connection cap, the loop bounds the TLS
        # handshake. (uvicorn's limit_concurrency is not used: it counts connections too, so at the
        # cap it would answer 503 on every open connection instead of refusing the new one.)
        # With --client-ca, clientauth's subclass also hands each connection's certificate to the app.
        http=clientauth.protocol(http) if settings.client_ca is not None else http,
        loop=f"{__name__}:guard_loop",
    )


class _Loop(uvloop.Loop):
    """uvloop with deadlines for the TLS handshake and the TLS close (uvicorn has no setting for
    either; uvloop's defaults are 60 s and 30 s). Without the second, a client that keeps sending
    after we answered 400 and closed keeps its connection until it stops."""

    handshake_timeout: float = READ_TIMEOUT_SECONDS

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:  # type: ignore[override]
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
            kwargs.setdefault("ssl_shutdown_timeout", self.handshake_timeout)
        server: asyncio.AbstractServer = await super().create_server(*args, **kwargs)
        return server


def guard_loop() -> asyncio.AbstractEventLoop:
    """The event loop uvicorn runs on (``loop=``): a connection that does not finish its handshake
    within ``_Loop.handshake_timeout`` seconds is closed."""
    return _Loop()


def uvicorn_server(asgi_app: Any, settings: Settings) -> uvicorn.Server:
    """A plain uvicorn server with the webhook's settings but no reload or drain (benchmark floor)."""
    paths = prepare_certs(settings.cert_dir)
    return uvicorn.Server(uvicorn_config(asgi_app, settings, tls_context(paths.cert, paths.key)))


class Server(uvicorn.Server):
    """uvicorn's server plus the reload task and a drain period before the listener closes."""

    def __init__(
        self, config: uvicorn.Config, state: app.State, settings: Settings, task: reload.Reloader
    ) -> None:
        super().__init__(config)
        self.state = state
        self.settings = settings
        self.reloader = task
        self.drain_until: float | None = None
        self._signalled: list[int] = []
        self.watcher: approvals_watch.Watcher | None = None  # started per (worker) process in serve

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        task = asyncio.create_task(self.reloader.run()) if self.settings.reload_interval > 0 else None
        if self.watcher is not None:
            self.watcher.start()
        if self.state.rbac is not None:
            self.state.rbac.start()  # here, not in build(): each forked worker needs its own threads
        try:
            await super().serve(sockets)
        finally:
            if task is not None:
                task.cancel()
            if self.state.decisions is not None and not self.state.decisions.close():
                log.warning("stopping with decision lines unwritten: stdout does not take them")
            if self.watcher is not None:
                self.watcher.stop()
            if self.state.rbac is not None:
                self.state.rbac.stop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a Python signal handler: set flags only; on_tick does the rest (and the logging).
        # Unlike uvicorn's own handler this does not re-raise the signal after shutdown, so a
        # graceful stop exits 0.
        self._signalled.append(sig)
        if self.drain_until is None:
            self.state.ready = False
            self.drain_until = time.monotonic() + self.settings.shutdown_delay
        elif self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.drain_until = time.monotonic()

    async def on_tick(self, counter: int) -> bool:
        if self._signalled:
            names = ", ".join(signal.Signals(s).name for s in self._signalled)
            self._signalled.clear()
            log.info(
                "%s: not ready any more; closing the listener in %.1fs, then %ds for requests in flight",
                names,
                max(0.0, (self.drain_until or 0) - time.monotonic()),
                self.settings.shutdown_timeout,
            )
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def rbac_cache(source: rbaccache.Source) -> rbaccache.RbacCache | None:
    """The RBAC cache for ``source`` (None for ``none``); its client is configured now, so a bad
    kubeconfig or a missing in-cluster token stops the start-up with a clear message."""
    if source.kind == rbaccache.NONE:
        return None
    try:
        client = source.api_client()
    except rbaccache.SourceError as exc:
        raise ServeError(f"--rbac-source {exc}") from exc
    return rbaccache.RbacCache(source, lambda: client)


def build(settings: Settings) -> Server:
    """Everything that can fail at start-up fails here, before a port is bound."""
    cache = rbac_cache(settings.rbac_source)
    state = app.State(load_engine(settings, cache), max_body=settings.max_body, meters=metrics.Metrics())
    state.rbac = cache
    state.metrics.policy_loaded.set_to_current_time()
    paths = prepare_certs(settings.cert_dir)
    require_client: Callable[[ssl.SSLContext], None] | None = None
    if settings.client_ca is not None:
        client_ca = settings.client_ca

        def require_client(context: ssl.SSLContext) -> None:  # every context, also after a rotation
            clientauth.require(context, client_ca)

        state.clients = clientauth.Clients(frozenset(settings.client_names))
    try:
        switch = certificate_switch(paths.cert, paths.key, require_client)
    except clientauth.ClientAuthError as exc:
        raise ServeError(str(exc)) from exc
    state.metrics.certificate_in_use(certs.not_after(paths.cert))
    reloader = reload.Reloader(
        settings.reload_interval,
        reload.PolicyReloader(settings.rules, settings.mode, state),
        reload.CertificateReloader(paths, switch, state),
    )
    try:
        stream = decisionlog.stdout_stream()
    except OSError as exc:
        raise ServeError(str(exc)) from None
    state.decisions = decisionlog.Writer(stream, state.metrics)
    asgi = app.create_app(state, on_decision=state.decisions)
    config = uvicorn_config(asgi, settings, switch.listening)
    log.info(
        "policy %s (mode %s); RBAC source %s; serving https://%s:%d",
        ", ".join(state.engine.policy.sources),
        state.engine.policy.mode,
        settings.rbac_source,
        settings.host,
        settings.port,
    )
    built = Server(config, state, settings, reloader)
    if settings.approvals:
        kubeconfig = settings.kubeconfig
        built.watcher = approvals_watch.Watcher(
            state.engine.approvals,
            state.engine.policy.guard_namespace,
            lambda: approvals_watch.api_client(kubeconfig),
        )
    return built


def serve(settings: Settings) -> int:
    server = build(settings)
    if settings.workers == 1:
        server.run()
        return 0
    return supervise(server, settings.workers)


def _worker(server: Server, sock: socket.socket, stops: set[signal.Signals]) -> NoReturn:
    """A forked worker: its own signal handlers (uvicorn installs the same later), then serve."""
    signal.signal(signal.SIGTERM, server.handle_exit)
    signal.signal(signal.SIGINT, server.handle_exit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    code = 0
    try:
        server.run(sockets=[sock])
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        code = 1
    finally:
        os._exit(code)


def supervise(server: Server, workers: int) -> int:
    """Fork ``workers`` copies of a built server that accept on one shared listening socket.

    Everything that can fail (policy, certificates, the bind) fails once, in the parent, before any
    fork. The kernel spreads connections over the processes; each worker has its own event loop,
    hot-reload task and metrics registry (a scrape sees one worker). A worker that dies while the
    guard is serving (a crash, the OOM killer) is logged and replaced, so capacity comes back and
    readiness stays honest; replacements are spaced ``RESPAWN_SECONDS`` apart so a worker that
    dies at once cannot make the parent spin. SIGTERM/SIGINT to the parent become a graceful
    SIGTERM to every worker; the parent then exits with the worst exit code among them.
    """
    sock = server.config.bind_socket()
    children: set[int] = set()
    stopping = False

    def _start() -> int:
        # SIGTERM/SIGINT stay blocked across the fork: a worker must not run the parent's handler
        # (which would swallow the signal) before it has its own, and the parent must not forward
        # before it knows the new pid. Signals that arrived meanwhile are delivered on unblocking.
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pid = os.fork()
            if pid == 0:
                _worker(server, sock, stops)
            children.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        if stopping:  # SIGTERM arrived before this fork: this one must stop too
            os.kill(pid, signal.SIGTERM)
        return pid

    def _forward(_: int, __: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for _ in range(workers):
        _start()
    log.info("started %d workers: %s", workers, ", ".join(map(str, sorted(children))))
    worst = 0
    last_start = 0.0
    while children:
        pid, status = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, abs(code))
            continue
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        log.error("worker %d %s while serving; starting a replacement", pid, how)
        time.sleep(max(0.0, last_start + RESPAWN_SECONDS - time.monotonic()))
        if not stopping:
            last_start = time.monotonic()
            log.info("replacement worker %d started (%d running)", _start(), len(children))
    sock.close()
    return worst
