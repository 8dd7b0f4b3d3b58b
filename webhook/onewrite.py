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

An app that has more to do after its answer (the guard records its decision) need not wait for that
step: the flush is in its scope as ``scope["extensions"][SCOPE_KEY]``, and calling it writes the
answer at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

SCOPE_KEY = "agent-guard.io/flush"


class Coalescing:
    """A transport proxy that joins the writes of one event-loop step into one write."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self.transport, name)


class _WithFlush:
    """The app, given the connection's flush (an ASGI scope extension)."""

    __slots__ = ("app", "flush")

    def __init__(self, app: Any, flush: Any) -> None:
        self.app, self.flush = app, flush

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("extensions", {})[SCOPE_KEY] = self.flush
        await self.app(scope, receive, send)


def protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol, or a subclass of it) writing each answer in one piece."""

    def connection_made(self: Any, transport: asyncio.Transport) -> None:
        coalescing = Coalescing(transport, asyncio.get_running_loop())
        base.connection_made(self, coalescing)  # type: ignore[arg-type]
        self.app = _WithFlush(self.app, coalescing.flush)

    return type(f"OneWrite{base.__name__}", (base,), {"connection_made": connection_made})
