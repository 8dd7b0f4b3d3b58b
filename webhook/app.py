"""HTTP surface: ``/validate``, ``/authorize``, ``/healthz``, ``/readyz``, ``/metrics``. Thin on purpose.

All judging happens in ``webhook.engine``; this module reads a bounded body, hands it to
``webhook.review`` and writes the answer. The two review endpoints are plain ASGI (``GuardApp``);
FastAPI serves the rest. Two error channels, never mixed: a malformed review is an
HTTP 4xx with a JSON ``{"error": ...}``; a policy violation is HTTP 200 with ``allowed: false``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, TypeVar

import fastapi
import orjson

from webhook import attributes, clientauth, decisionlog, engine, metrics, onewrite, rbaccache, review

log = logging.getLogger("agent-guard.app")

# What the apiserver can send (docs/hardening.md): an AdmissionReview carries the object and, on
# UPDATE and DELETE, the old object. The apiserver refuses write bodies over 3 MiB
# (MaxRequestBodyBytes in k8s.io/apiserver pkg/server/config.go: twice etcd's 1.5 MiB request limit),
# so each object is at most about 3 MiB of JSON; 1 MiB more covers the envelope (userInfo, options).
APISERVER_MAX_REQUEST_BODY = 3 * 1024 * 1024
DEFAULT_MAX_BODY = 2 * APISERVER_MAX_REQUEST_BODY + 1024 * 1024
# The body limit bounds bytes, not the Python objects parsed from them: `{},` is 3 bytes and some
# 100 bytes once parsed. So a body may hold at most this many JSON values (counted from its
# commas and brackets before parsing, an upper bound). Ordinary objects average 15 bytes or more
# per value, so a 3 MiB object and its old version stay below it; a denser one is refused (413),
# which the apiserver turns into a denial for the agent. Peak memory is measured by bench.memory.
MAX_JSON_VALUES = 256 * 1024
# Bytes of request bodies buffered at once beyond the first BODY_ALLOWANCE of each request: many
# clients sending large bodies at once (or slowly) cannot add up to more than this; the one that
# would is answered 503 and the apiserver retries or applies the failure policy.
BODY_ALLOWANCE = 64 * 1024
BODY_BUDGET = 32 * 1024 * 1024


SHUTTING_DOWN = "the guard shut down before this review was complete; send it again (another replica answers)"


class Problem(Exception):
    """An HTTP error with a message for the client (never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_values(body: bytes) -> int:
    """An upper bound on the JSON values in ``body`` (every value but the first in a container
    follows a comma; brackets inside strings only make the bound higher)."""
    if len(body) <= MAX_JSON_VALUES:  # cannot hold more values than bytes
        return 0
    return body.count(b",") + body.count(b"{") + body.count(b"[") + 1


class Budget:
    """Bytes that request bodies may buffer at once, shared by every request in this process."""

    def __init__(self, total: int = BODY_BUDGET) -> None:
        self.total = total
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.total:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class State:
    """What the app serves from. ``engine`` is swapped whole on policy reload (atomic reference).

    ``ready`` turns false when the server starts draining (SIGTERM): ``/readyz`` answers 503 and
    every answer carries ``Connection: close`` so clients move to the other replicas.
    ``policy_error`` is the last refused policy reload (``None`` once a reload succeeds).
    ``decisions`` is the decision log writer, whose write error (if any) ``/readyz`` reports.
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
        self.metrics.watch_state(lambda: self.engine)  # budgets and approvals, read at scrape time
        self.metrics.track(endpoint.name for endpoint in ENDPOINTS.values())
        self.policy_error: str | None = None
        self.decisions: decisionlog.Writer | None = None
        self.budget = Budget()
        self.clients: clientauth.Clients | None = None  # set: reviews need the apiserver's certificate
        # The RBAC view the engine judges with (None: no source); ``/readyz`` reports its sync.
        self.rbac: rbaccache.RbacCache | None = None


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
P = TypeVar("P")


@dataclasses.dataclass(frozen=True)
class Endpoint(Generic[P]):
    """One review endpoint: how to parse its envelope, judge it, log it and answer it.

    ``/validate`` and ``/authorize`` differ only in these functions; the path through them (bounded
    body, 400 on a malformed review, fail closed when the engine fails, metrics, one decision line)
    is the same code.
    """

    name: str
    envelope: str  # what the body must be ("AdmissionReview"), for the 400 and 405 messages
    parse: Callable[[bytes], P]
    judge: Callable[[engine.Engine, P], engine.Verdict]
    entry: Callable[[P, engine.Verdict, str], dict[str, Any]]
    respond: Callable[[P, engine.Verdict], dict[str, Any]]
    who: Callable[[P], str]  # identifies the request in the error log
    without_objects: Callable[[P], P]  # the request minus what its decision line never reads


VALIDATE = Endpoint[attributes.AdmissionRequest](
    name="validate",
    envelope="AdmissionReview",
    parse=review.parse_admission,
    judge=lambda judge, request: judge.admit(request),
    entry=decisionlog.admission_entry,
    respond=lambda request, verdict: review.admission_response(request.uid, verdict),
    who=lambda request: f"uid={request.uid}",
    without_objects=lambda request: dataclasses.replace(request, object=None, old_object=None, options=None),
)
AUTHORIZE = Endpoint[review.AccessReview](
    name="authorize",
    envelope="SubjectAccessReview",
    parse=review.parse_access,
    judge=lambda judge, access: judge.authorize(access.request),
    entry=lambda access, verdict, mode: decisionlog.access_entry(access.request, verdict, mode),
    respond=lambda access, verdict: review.access_response(access.api_version, verdict),
    who=lambda access: f"user={access.request.user.username}",
    without_objects=lambda access: access,
)
ENDPOINTS: dict[str, Endpoint[Any]] = {"/validate": VALIDATE, "/authorize": AUTHORIZE}


async def read_body(scope: Scope, receive: Receive, limit: int, budget: Budget | None = None) -> bytes:
    """Read at most ``limit`` bytes: refuse by Content-Length first, then while streaming.

    Beyond the first BODY_ALLOWANCE bytes, a body is buffered only while the shared ``budget``
    has room for it (503 when not); what it took is given back when this returns.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise Problem(400, "invalid Content-Length header")
            if int(value) > limit:
                raise Problem(413, f"request body of {int(value)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = taken = 0
    more = True
    try:
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Problem(400, "the client went away before sending the whole body")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"request body exceeds the limit of {limit} bytes")
            if budget is not None and size > BODY_ALLOWANCE:
                needed = size - BODY_ALLOWANCE - taken
                if not budget.take(needed):
                    raise Problem(503, "too many large request bodies arriving at once; send it again")
                taken += needed
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if budget is not None:
            budget.give(taken)


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message, "status": status})


class GuardApp:
    """The ASGI app: reviews are served here directly, everything else by FastAPI.

    Reviews are the hot path (every agent request waits on one), so they skip the framework's
    request objects, routing and exception middleware; the cost per review is the envelope parse,
    the guards, one decision line and one JSON dump. While draining (``state.ready`` false) every
    answer carries ``Connection: close`` so the apiserver moves its keep-alive connections on.
    """

    def __init__(
        self, state: State, fallback: ASGIApp, on_decision: Callable[[dict[str, Any]], None]
    ) -> None:
        self.state = state
        self.fallback = fallback
        self.on_decision = on_decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.fallback(scope, receive, send if self.state.ready else self._closing(send))
            return
        started = time.perf_counter()
        status = 500
        closing = not self.state.ready
        record: Callable[[], None] | None = None
        try:
            refusal = self.state.clients.refusal(scope) if self.state.clients is not None else None
            if scope["method"] != "POST":
                status, payload = 405, _error(405, f"use POST with a JSON {endpoint.envelope} body")
            elif refusal is not None:
                log.warning("/%s from %s refused: %s", endpoint.name, scope.get("client"), refusal)
                status, payload = 403, _error(403, refusal)
            else:
                body = await read_body(scope, receive, self.state.max_body, self.state.budget)
                status, payload, record = self._review(endpoint, body)
        except Problem as exc:
            status, payload = exc.status, _error(exc.status, exc.message)
        except asyncio.CancelledError:
            # uvicorn cancels what is still in flight when --shutdown-timeout runs out (in practice a
            # body still arriving): answer that, rather than let it send a bare 500, and finish
            # normally so the cancellation is not logged as a crash.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            status, payload = 503, _error(503, SHUTTING_DOWN)
            closing = True
        except Exception as exc:  # never a traceback to the client
            log.error("unexpected %s while serving /%s", type(exc).__name__, endpoint.name, exc_info=exc)
            status, payload = 500, _error(500, "internal error in the guard; see its log")
        elapsed = time.perf_counter() - started
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 405:
            headers.append((b"allow", b"POST"))
        if closing:
            headers.append((b"connection", b"close"))
        # The apiserver waits for the answer, not for the bookkeeping: behind webhook.onewrite the
        # metrics and the decision line are recorded right after the answer is written. On a node
        # that was idle between reviews every microsecond of work costs several (cold caches), so
        # this is measured at the apiserver (BENCHMARKS.md).
        after_flush = scope.get("extensions", {}).get(onewrite.SCOPE_KEY)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            done = functools.partial(self._after_answer, endpoint, status, elapsed, record)
            if after_flush is None:
                done()
            else:
                after_flush(done)

    def _after_answer(
        self, endpoint: Endpoint[Any], status: int, elapsed: float, record: Callable[[], None] | None
    ) -> None:
        """The metrics and the decision line of an answered review. The decision stands once
        answered: a failure to record it is logged, never raised."""
        try:
            self.state.metrics.response(endpoint.name, status, elapsed)
            if record is not None:
                record()
        except Exception as exc:
            log.error(
                "unexpected %s while recording a /%s decision",
                type(exc).__name__,
                endpoint.name,
                exc_info=exc,
            )

    def _review(self, endpoint: Endpoint[Any], body: bytes) -> tuple[int, bytes, Callable[[], None] | None]:
        """Judge one review: the answer's status and bytes, and what records the decision."""
        if (values := json_values(body)) > MAX_JSON_VALUES:
            return (
                413,
                _error(
                    413,
                    f"the {endpoint.envelope} holds up to {values} JSON values, more than the "
                    f"{MAX_JSON_VALUES} the guard parses per review",
                ),
                None,
            )
        try:
            parsed = endpoint.parse(body)
        except review.BadReview as exc:
            return 400, _error(400, f"malformed {endpoint.envelope}: {exc}"), None
        state = self.state
        judge = state.engine
        mode = judge.policy.mode
        try:
            verdict = endpoint.judge(judge, parsed)
        except Exception as exc:  # fail closed: only agents are routed to us by matchConditions
            log.exception("engine failed on /%s %s", endpoint.name, endpoint.who(parsed))
            verdict = engine.fail_closed(f"the guard failed ({type(exc).__name__})")

        # What the decision line needs, without the objects under review: kept alive until after
        # the answer, a large object's parsed graph cost the collector enough to lose a quarter of
        # /validate's throughput.
        judged = endpoint.without_objects(parsed)

        def record() -> None:
            state.metrics.review(endpoint.name, verdict, mode)
            self.on_decision(endpoint.entry(judged, verdict, mode))

        return 200, orjson.dumps(endpoint.respond(parsed, verdict)), record

    @staticmethod
    def _closing(send: Send) -> Send:
        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        return _send


def _json(payload: Any, status: int = 200) -> fastapi.Response:
    return fastapi.Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def create_app(state: State, on_decision: Callable[[dict[str, Any]], None]) -> GuardApp:
    """The whole HTTP surface; ``on_decision`` receives one decision entry per review."""
    app = fastapi.FastAPI(title="kube-agent-guard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.guard = state

    @app.exception_handler(Exception)
    async def _unexpected(_: fastapi.Request, exc: Exception) -> fastapi.Response:
        log.error("unexpected %s while serving a request", type(exc).__name__, exc_info=exc)
        return _json({"error": "internal error in the guard; see its log", "status": 500}, 500)

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
        if state.decisions is not None and state.decisions.error is not None:
            # Still ready: decisions are made and enforced; only their log lines are being lost
            # (counted in agent_guard_decision_log_dropped_lines_total).
            answer["decisionLogError"] = state.decisions.error
        if state.rbac is not None:
            answer["rbac"] = state.rbac.status()
            if not state.rbac.synced:  # not ready before the first RBAC read: agents would be refused
                answer["status"] = "waiting for the first read of the cluster's RBAC objects"
                return _json(answer, 503)
        return _json(answer)

    @app.get("/metrics")
    async def scrape() -> fastapi.Response:
        return fastapi.Response(state.metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return GuardApp(state, app, on_decision)
