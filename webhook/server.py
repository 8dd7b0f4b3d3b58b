"""Run the app under uvicorn, TLS only.

The SSL context is ours rather than uvicorn's so that the minimum protocol is explicit (TLS 1.2)
and so that certificates can be re-loaded into the same context while serving.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from webhook import app, certs, engine, policy

log = logging.getLogger("agent-guard.server")

# The apiserver keeps webhook connections alive (Go's idle timeout is 90 s); closing ours first
# would race its next request onto a dying connection.
KEEP_ALIVE_SECONDS = 120


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


def load_engine(settings: Settings) -> engine.Engine:
    try:
        judge = engine.Engine(policy.load(settings.rules, settings.mode))
    except policy.PolicyError as exc:
        raise ServeError(f"invalid policy:\n{exc}") from exc
    for level, line in judge.exemption_status():
        log.log(logging.WARNING if level == "warning" else logging.INFO, "exemption %s", line)
    return judge


def uvicorn_server(asgi_app: Any, settings: Settings) -> uvicorn.Server:
    """uvicorn over our TLS context with production settings (also used by the benchmark floor)."""
    paths = prepare_certs(settings.cert_dir)
    context = tls_context(paths.cert, paths.key)

    def _context(_: uvicorn.Config, __: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    config = uvicorn.Config(
        asgi_app,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=_context,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
        log_config=None,
    )
    return uvicorn.Server(config)


def build(settings: Settings) -> uvicorn.Server:
    """Everything that can fail at start-up fails here, before a port is bound."""
    state = app.State(load_engine(settings), max_body=settings.max_body)
    built = uvicorn_server(app.create_app(state), settings)
    log.info(
        "policy %s (mode %s); serving https://%s:%d",
        ", ".join(state.engine.policy.sources),
        state.engine.policy.mode,
        settings.host,
        settings.port,
    )
    return built


def serve(settings: Settings) -> int:
    server = build(settings)
    server.run()
    return 0
