"""One write per answer: the response head and body leave in one TLS record and one ``send``.

uvicorn writes an ASGI response as it is sent: the status line and headers on
``http.response.start``, the body on ``http.response.body``. Over TLS each ``transport.write`` is its
own TLS record (encrypted, MAC'd, framed) and its own ``send`` system call, and the apiserver's
client reads it as two segments. A review answer is a few hundred bytes, so the second record costs
about as much as the first: the profile of the floor under load showed the two writes as the
largest part of a request (docs/performance.md).

``protocol(base)`` is ``base`` with its transport wrapped: writes made while the app runs collect
in a buffer that is flushed once, by the event loop right after the current step (a review's two
``send`` calls happen in one step, so they become one write). Closing flushes first, so a
``Connection: close`` answer is never cut off. Flow control, ``is_closing`` and everything else go
to the real transport.

An app that has more to do once its answer is out (the guard records its decision) hands that work
to ``scope["extensions"][SCOPE_KEY]``: it runs right after the flush, in the same loop step, so the
answer leaves first and the answers of one step still leave together (writing each one at once from
the app measured 20-35 % less throughput: the client's next requests then arrive one by one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SCOPE_KEY = "agent-guard.io/after-flush"


class Coalescing:
    """A transport proxy that joins the writes of one event-loop step into one write."""

    __slots__ = ("_after", "_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._after: list[Callable[[], None]] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def after_flush(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once what is pending has been written (at once when nothing is)."""
        if self._pending:
            self._after.append(callback)
        else:
            self._loop.call_soon(callback)

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self.transport.is_closing():
                self.transport.write(data)
        if self._after:
            callbacks, self._after = self._after, []
            for callback in callbacks:
                callback()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self.transport, name)


class _WithAfterFlush:
    """The app, given the connection's ``after_flush`` (an ASGI scope extension)."""

    __slots__ = ("after_flush", "app")

    def __init__(self, app: Any, after_flush: Callable[[Callable[[], None]], None]) -> None:
        self.app, self.after_flush = app, after_flush

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("extensions", {})[SCOPE_KEY] = self.after_flush
        await self.app(scope, receive, send)


def protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol, or a subclass of it) writing each answer in one piece."""

    def connection_made(self: Any, transport: asyncio.Transport) -> None:
        coalescing = Coalescing(transport, asyncio.get_running_loop())
        base.connection_made(self, coalescing)  # type: ignore[arg-type]
        self.app = _WithAfterFlush(self.app, coalescing.after_flush)

    return type(f"OneWrite{base.__name__}", (base,), {"connection_made": connection_made})
