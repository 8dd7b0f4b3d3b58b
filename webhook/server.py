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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from webhook import (
    app,
    approvals_watch,
    certs,
    clientauth,
    decisionlog,
    engine,
    metrics,
    onewrite,
    policy,
    rbaccache,
    reload,
)

log = logging.getLogger("agent-guard.server")

# The apiserver keeps webhook connections alive (Go's idle timeout is 90 s); closing ours first
# would race its next request onto a dying connection.
KEEP_ALIVE_SECONDS = 120
# uvicorn's HTTP protocol (httptools, the C parser, when installed); ``webhook.onewrite`` wraps it.
AUTO_HTTP: type[asyncio.Protocol] = uvicorn.importer.import_from_string(uvicorn.config.HTTP_PROTOCOLS["auto"])


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
    client_ca: Path | None = None  # reviews only from clients with a certificate from this CA
    client_names: tuple[str, ...] = ()  # ... and (if any) one of these common names
    approvals: bool = False  # watch Approval objects (human approvals) in the guard's namespace
    kubeconfig: str | None = None  # for the approvals watch; None: the pod's ServiceAccount
    rbac_source: rbaccache.Source = rbaccache.NO_SOURCE  # none: guards judge RBAC by names only


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from exc
    return context


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

    return uvicorn.Config(
        asgi_app,
        http=onewrite.protocol(clientauth.protocol() if settings.client_ca is not None else AUTO_HTTP),
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
    )


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
    context = tls_context(paths.cert, paths.key)
    if settings.client_ca is not None:
        try:
            clientauth.require(context, settings.client_ca)
        except clientauth.ClientAuthError as exc:
            raise ServeError(str(exc)) from exc
        state.clients = clientauth.Clients(frozenset(settings.client_names))
    state.metrics.certificate_in_use(certs.not_after(paths.cert))
    reloader = reload.Reloader(
        settings.reload_interval,
        reload.PolicyReloader(settings.rules, settings.mode, state),
        reload.CertificateReloader(paths, context, state),
    )
    asgi = app.create_app(state, on_decision=decisionlog.Writer(sys.stdout.buffer))
    config = uvicorn_config(asgi, settings, context)
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


def supervise(server: Server, workers: int) -> int:
    """Fork ``workers`` copies of a built server that accept on one shared listening socket.

    Everything that can fail (policy, certificates, the bind) fails once, in the parent, before any
    fork. The kernel spreads connections over the processes; each worker has its own event loop,
    hot-reload task and metrics registry (a scrape sees one worker). SIGTERM/SIGINT to the parent
    become a graceful SIGTERM to every worker; the parent exits with the worst worker exit code.
    """
    sock = server.config.bind_socket()
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                server.run(sockets=[sock])
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    log.info("started %d workers: %s", workers, ", ".join(map(str, children)))

    def _forward(_: int, __: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, abs(os.waitstatus_to_exitcode(status)))
    return worst
