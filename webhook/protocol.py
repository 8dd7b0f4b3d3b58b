"""uvicorn's httptools protocol plus three limits uvicorn does not have.

uvicorn bounds what it can (configured in ``webhook.server``: keep-alive idle time, requests in
progress). Its h11 protocol also bounds the request head, but h11 parses in pure Python and cost
the guard about 40% of its throughput (docs/hardening.md), so the guard keeps the C parser
(httptools/llhttp) and adds what is missing. One hostile client could otherwise hold the guard -
and with it every agent request, which fails closed while the guard is away:

- **request-head limit**: a head (request line and headers) longer than ``max_head`` bytes is
  answered 431 and the connection closed. httptools buffers a header until it is complete, so
  without this one endless header grows memory and parsing cost without bound.
- **read deadline**: a request must arrive whole (head and body) within ``read_timeout`` seconds
  of its first byte, and a new connection must send its first request within the same time. A
  client that sends the head byte by byte, or a body at 10 B/s, is disconnected at the deadline.
  uvicorn only times out connections that are idle *after* a response (``timeout_keep_alive``).
- **connection cap**: a connection beyond ``max_connections`` is closed as soon as it is made,
  so file descriptors and per-connection buffers stay bounded whatever the number of clients.

All three are per worker. The TLS handshake has its own deadline (``webhook.server.guard_loop``):
this protocol only sees a connection once its handshake is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; the limits are set by ``configured``."""

    read_timeout: float = 10.0
    max_connections: int = 512
    max_head: int = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = False  # a request has begun and is not complete
        self._in_head = False  # ... and its head is not complete either
        self._head_bytes = 0
        self._refused = False

    @classmethod
    def configured(cls, read_timeout: float, max_connections: int, max_head: int) -> type[GuardProtocol]:
        """A subclass with these limits (uvicorn instantiates the class it is given per connection)."""
        limits = {"read_timeout": read_timeout, "max_connections": max_connections, "max_head": max_head}
        return type(cls.__name__, (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning("closing a new connection: %d connections is the limit", self.max_connections)
            self._refused = True
            transport.close()
            return
        self._arm()  # the first request must arrive in time, too

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head:
            # Bytes received while the head is incomplete: all of this chunk counts (with pipelining
            # it may also hold the end of the previous request, which only makes the bound stricter).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = self._in_head = True
        self._head_bytes = 0
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = False
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _refuse_head(self) -> None:
        self._refused = True
        self._disarm()
        body = b'{"error":"request head exceeds %d bytes","status":431}' % self.max_head
        self.transport.write(TOO_LARGE % (len(body), body))
        self.transport.close()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            # No answer: a client this slow is not the apiserver (which gave up long ago).
            self._refused = True
            self.transport.close()
