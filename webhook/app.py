"""HTTP surface: ``/validate``, ``/authorize``, ``/healthz``, ``/readyz``, ``/metrics``. Thin on purpose.

All judging happens in ``webhook.engine``; this module reads a bounded body, hands it to
``webhook.review`` and writes the answer. Two error channels, never mixed: a malformed review is an
HTTP 4xx with a JSON ``{"error": ...}``; a policy violation is HTTP 200 with ``allowed: false``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import fastapi
import pydantic_core

from webhook import decisionlog, engine, metrics, review

log = logging.getLogger("agent-guard.app")

DEFAULT_MAX_BODY = 8 * 1024 * 1024  # AdmissionReviews carry old+new objects; etcd caps objects at ~1.5 MiB


class Problem(Exception):
    """An HTTP error with a message for the client (never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class State:
    """What the app serves from. ``engine`` is swapped whole on policy reload (atomic reference).

    ``ready`` turns false when the server starts draining (SIGTERM): ``/readyz`` answers 503 and
    every answer carries ``Connection: close`` so clients move to the other replicas.
    ``policy_error`` is the last refused policy reload (``None`` once a reload succeeds).
    """

    def __init__(
        self,
        judge: engine.Engine,
        max_body: int = DEFAULT_MAX_BODY,
        meters: metrics.Metrics | None = None,
    ) -> None:
        self.engine = judge
        self.max_body = max_body
        self.ready = True
        self.metrics = meters if meters is not None else metrics.Metrics()
        self.policy_error: str | None = None


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Transport:
    """Pure ASGI middleware: time review requests, and ask clients to reconnect while draining.

    Pure ASGI (no BaseHTTPMiddleware) keeps the cost per request to two clock reads and a dictionary
    lookup. The duration runs from the first call into the app to the last body chunk sent.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = metrics.REVIEW_PATHS.get(scope["path"])
        state = self.state
        started = time.perf_counter()
        status = 500
        recorded = False

        async def _send(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
                if not state.ready:
                    message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)
            done = message["type"] == "http.response.body" and not message.get("more_body")
            if endpoint is not None and done:
                recorded = True
                state.metrics.response(endpoint, status, time.perf_counter() - started)

        try:
            await self.app(scope, receive, _send)
        finally:
            if endpoint is not None and not recorded:  # an exception, or the client went away
                state.metrics.response(endpoint, status, time.perf_counter() - started)


def _json(payload: Any, status: int = 200) -> fastapi.Response:
    return fastapi.Response(pydantic_core.to_json(payload), status_code=status, media_type="application/json")


async def read_body(request: fastapi.Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes: refuse by Content-Length first, then while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise Problem(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    state: State, on_decision: Callable[[dict[str, Any]], None] = decisionlog.write
) -> fastapi.FastAPI:
    app = fastapi.FastAPI(title="kube-agent-guard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.guard = state
    app.add_middleware(Transport, state=state)

    @app.exception_handler(Problem)
    async def _problem(_: fastapi.Request, exc: Problem) -> fastapi.Response:
        return _json({"error": exc.message, "status": exc.status}, exc.status)

    @app.exception_handler(Exception)
    async def _unexpected(_: fastapi.Request, exc: Exception) -> fastapi.Response:
        log.error("unexpected %s while serving a request", type(exc).__name__, exc_info=exc)
        return _json({"error": "internal error in the guard; see its log", "status": 500}, 500)

    @app.post("/validate")
    async def validate(request: fastapi.Request) -> fastapi.Response:
        body = await read_body(request, state.max_body)
        try:
            admission = review.parse_admission(body)
        except review.BadReview as exc:
            raise Problem(400, f"malformed AdmissionReview: {exc}") from None
        judge = state.engine
        try:
            verdict = judge.admit(admission)
        except Exception as exc:  # fail closed: only agents are routed to us by matchConditions
            log.exception("engine failed on uid=%s", admission.uid)
            state.metrics.engine_failure("validate")
            return _json(
                review.fail_closed_response(admission.uid, f"the guard failed ({type(exc).__name__})")
            )
        state.metrics.review("validate", verdict, judge.policy.mode)
        on_decision(decisionlog.admission_entry(admission, verdict, judge.policy.mode))
        return _json(review.admission_response(admission.uid, verdict))

    @app.post("/authorize")
    async def authorize(request: fastapi.Request) -> fastapi.Response:
        body = await read_body(request, state.max_body)
        try:
            access = review.parse_access(body)
        except review.BadReview as exc:
            raise Problem(400, f"malformed SubjectAccessReview: {exc}") from None
        judge = state.engine
        try:
            verdict = judge.authorize(access.request)
        except Exception as exc:  # fail closed: only agents are routed to us by matchConditions
            log.exception("engine failed on a SubjectAccessReview for %s", access.request.user.username)
            verdict = review.fail_closed_verdict(f"the guard failed ({type(exc).__name__})")
        on_decision(decisionlog.access_entry(access.request, verdict, judge.policy.mode))
        return _json(review.access_response(access.api_version, verdict))

    @app.get("/healthz")
    async def healthz() -> fastapi.Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> fastapi.Response:
        if not state.ready:
            return _json({"status": "shutting down"}, 503)
        answer: dict[str, Any] = {"status": "ok", "policy": list(state.engine.policy.sources)}
        if state.policy_error is not None:  # still ready: the last good policy is in force
            answer["policyReloadError"] = state.policy_error
        return _json(answer)

    @app.get("/metrics")
    async def scrape() -> fastapi.Response:
        return fastapi.Response(state.metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return app
