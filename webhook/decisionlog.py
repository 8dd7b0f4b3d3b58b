"""One JSON line per decision, for operators, ``agent-guard report`` and audit.

Only identities, coordinates, guard ids and our own messages are logged: never objects, never
Secret data. Decision lines go to stdout (``Writer``), diagnostics to stderr, so the two can be
routed apart.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import orjson

from webhook import attributes, engine

if TYPE_CHECKING:
    from webhook import metrics

log = logging.getLogger("agent-guard.decisions")


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _now() -> str:
    """UTC with milliseconds (``2026-11-24T08:49:39.302Z``); the seconds part is formatted once a second."""
    now = time.time()
    second = int(now)
    return f"{_second(second)}.{int((now - second) * 1000):03d}Z"


def effective_mode(verdict: engine.Verdict, global_mode: str) -> str:
    if verdict.denials:
        return "enforce"
    if verdict.warnings:
        return "dry-run"
    return global_mode


def _entry(verdict: engine.Verdict, global_mode: str, **coordinates: Any) -> dict[str, Any]:
    entry = {
        "time": _now(),
        **coordinates,
        "agent": verdict.agent,
        "guards": list(verdict.guards),
        "mode": effective_mode(verdict, global_mode),
        "decision": verdict.decision,
        "allowed": verdict.allowed,
        "messages": [f.message for f in verdict.findings],
    }
    entry.update(exemption_fields(verdict))
    return entry


def exemption_fields(verdict: engine.Verdict) -> dict[str, Any]:
    """``exempted`` / ``expiredExemptions``, only when present so the common line stays short."""
    fields: dict[str, Any] = {}
    if verdict.exempted:
        fields["exempted"] = [
            {**item.exemption.as_log(), "message": item.finding.message} for item in verdict.exempted
        ]
    if verdict.expired:
        fields["expiredExemptions"] = [item.as_log() for item in verdict.expired]
    return fields


def admission_entry(
    request: attributes.AdmissionRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    return _entry(
        verdict,
        global_mode,
        endpoint="validate",
        uid=request.uid,
        user=request.user.username,
        operation=request.operation,
        resource=request.resource_path,
        group=request.resource.group,
        namespace=request.namespace,
        name=request.name,
        dryRun=request.dry_run,
    )


RBAC_GROUP = "rbac.authorization.k8s.io"
# While storing a Role/ClusterRole (``escalate``) or a binding (``bind``, on the role it references)
# RBAC asks the authorizer chain first; a denial there is not final, RBAC then checks that the caller
# already holds every permission granted, and admission judges the object itself.
RBAC_PRECHECKS = frozenset({"escalate", "bind"})
PRECHECK_NOTE = (
    "RBAC asks this while an agent creates or updates a Role, ClusterRole or binding; the denial only "
    "makes RBAC fall back to checking that the agent already holds every permission it grants, so the "
    "write may still succeed (admission judges its content)"
)


def is_rbac_precheck(request: attributes.AccessRequest) -> bool:
    """An ``escalate``/``bind`` check on a role: what RBAC asks before it stores a role or binding."""
    return (
        request.verb in RBAC_PRECHECKS
        and request.group == RBAC_GROUP
        and request.resource in ("roles", "clusterroles")
        and not request.sub_resource
    )


def access_entry(
    request: attributes.AccessRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    entry = _access_entry(request, verdict, global_mode)
    if verdict.findings and is_rbac_precheck(request):
        entry["final"] = False  # the log must not claim a refusal for a write that may succeed
        entry["note"] = PRECHECK_NOTE
    return entry


def _access_entry(
    request: attributes.AccessRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    return _entry(
        verdict,
        global_mode,
        endpoint="authorize",
        uid="",
        user=request.user.username,
        operation=request.verb,
        resource=request.resource_path or request.path,
        group=request.group,
        namespace=request.namespace,
        name=request.name,
        dryRun=False,
    )


class Writer:
    """Decision lines to a binary stream, written by a thread of their own: the event loop never waits.

    A review only serialises its line and puts it on a bounded queue (a few microseconds). The
    writer thread takes whatever has queued up, writes it in one call and flushes. So a log reader
    that stops reading (a stalled pipe, a slow node agent) stalls only that thread: the queue fills,
    further lines are dropped and counted (``agent_guard_decision_log_dropped_lines_total``), and
    reviews keep being answered. A sink that fails (full disk, broken pipe) is counted the same way
    and reported by ``/readyz`` as ``decisionLogError`` until a write succeeds again; it never
    fails a review. The queue holds ``capacity`` lines (about 2 MiB at the default), which rides out
    a reader pausing for a second or two at thousands of reviews per second.

    The stdlib ``logging`` path (records, caller lookup, formatting) cost more than judging a
    typical request, and decision lines need none of it: they are data, always written, never
    filtered by ``--log-level``. Diagnostics keep using ``logging`` (``configure_diagnostics``).
    The thread is started by the first line in each process, so a writer built before
    ``--workers`` forks serves every worker.
    """

    CAPACITY = 4096
    BATCH = 512  # lines per write call at most
    INTERVAL = 0.005  # seconds between looks while lines come in
    IDLE_POLLS = 20  # empty looks (0.1 s) before the writer sleeps until woken

    def __init__(
        self, stream: BinaryIO, meters: metrics.Metrics | None = None, capacity: int = CAPACITY
    ) -> None:
        self._stream = stream
        self._metrics = meters
        self._capacity = capacity
        # A deque, not a queue.Queue: appending is one atomic C call with no lock and no wake-up
        # (waking the writer per line cost a quarter of a review's CPU time). The writer looks
        # every INTERVAL while lines come in; after IDLE_POLLS empty looks it sleeps until the next
        # line wakes it, so an idle guard costs no CPU and a quiet one's lines appear at once.
        self._lines: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._closing = False
        self.error: str | None = None  # the last write error, until a write succeeds again
        self.dropped = 0
        os.register_at_fork(after_in_child=self._forked)

    def __call__(self, entry: dict[str, Any]) -> None:
        if self._thread is None:
            self._run()
        if len(self._lines) >= self._capacity:
            self._drop(1, "queue-full")
            return
        self._lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        if self._sleeping:
            self._sleeping = False
            self._wake.set()

    def _forked(self) -> None:
        """In a forked worker there is no writer thread (threads do not survive a fork): start anew."""
        self._thread, self._start = None, threading.Lock()

    def _run(self) -> None:
        with self._start:
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._write_forever, name="decision-log", daemon=True)
                self._thread.start()

    def _drop(self, lines: int, reason: str) -> None:
        self.dropped += lines
        if self._metrics is not None:
            self._metrics.decision_lines_dropped(reason, lines)

    def _write_forever(self) -> None:
        lines, take = self._lines, self._lines.popleft
        empty = 0
        while True:
            closing = self._closing  # read before draining, so nothing queued before close() is lost
            batch = [take() for _ in range(min(len(lines), self.BATCH))]
            if batch:
                self._write(batch)
                empty = 0
            elif closing:
                return
            elif empty < self.IDLE_POLLS:
                empty += 1
                time.sleep(self.INTERVAL)
            else:
                self._sleeping = True
                if not lines:  # a line appended just before we said so is not left waiting
                    self._wake.wait(1.0)
                self._wake.clear()
                self._sleeping = False

    def _write(self, lines: list[bytes]) -> None:
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            if self.error is None:
                log.error("cannot write decision lines (%s); dropping them until a write succeeds", exc)
            self.error = f"{type(exc).__name__}: {exc}"
            self._drop(len(lines), "write-error")
            if self._metrics is not None:
                self._metrics.decision_log_failed(True)
            return
        if self.error is not None:
            log.warning("decision lines are written again (%d dropped so far)", self.dropped)
            self.error = None
            if self._metrics is not None:
                self._metrics.decision_log_failed(False)

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued and stop the thread; False if the sink did not take it in time."""
        thread = self._thread
        if thread is None:
            return True
        self._closing = True
        self._wake.set()  # if asleep
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True


def stdout_stream() -> BinaryIO:
    """Where decision lines go: stdout, or a clear error when the process has none."""
    stream = getattr(sys.stdout, "buffer", None)
    try:
        if stream is None:
            raise OSError("no stdout")
        os.fstat(stream.fileno())
    except (OSError, ValueError) as exc:
        raise OSError(
            f"decision lines are written to stdout, which is closed ({exc}); start the guard with "
            "stdout open (redirect it to /dev/null to discard decision lines)"
        ) from None
    return cast(BinaryIO, stream)


def configure_diagnostics(level: int = logging.INFO) -> None:
    """Diagnostics go to stderr with a time and level prefix (decision lines go to stdout)."""
    root = logging.getLogger()
    if not root.handlers:
        diagnostics = logging.StreamHandler(sys.stderr)
        diagnostics.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(diagnostics)
    root.setLevel(level)
