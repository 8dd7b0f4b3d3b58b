"""uvicorn's h11 protocol plus the two limits uvicorn does not have: a read deadline and a connection cap.

What uvicorn and h11 already bound is configured in ``webhook.server`` (request-head size,
keep-alive idle time, concurrent requests). What they leave open, one hostile client could use to
hold the guard - and with it every agent request, which fails closed while the guard is away:

- **read deadline**: a request must arrive whole (head and body) within ``read_timeout`` seconds
  of its first byte, and a new connection must send its first request within the same time. A
  client that sends the head byte by byte, or a body at 10 B/s, is disconnected at the deadline.
  uvicorn only times out connections that are idle *after* a response (``timeout_keep_alive``).
- **connection cap**: a connection beyond ``max_connections`` is closed as soon as it is made,
  so file descriptors and per-connection buffers stay bounded whatever the number of clients.

Both are per-worker. The TLS handshake has its own deadline (``webhook.server.guard_loop``): this
protocol only sees a connection once its handshake is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# h11 states of the client's side in which a request has been started but not fully received.
_READING = (h11.IDLE, h11.SEND_BODY)


class GuardProtocol(H11Protocol):
    """One HTTP/1.1 connection; ``read_timeout`` and ``max_connections`` are set by ``configured``."""

    read_timeout: float = 10.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, read_timeout: float, max_connections: int) -> type[GuardProtocol]:
        """A subclass with these limits (uvicorn instantiates the class it is given per connection)."""
        return type(cls.__name__, (cls,), {"read_timeout": read_timeout, "max_connections": max_connections})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning("closing a new connection: %d connections is the limit", self.max_connections)
            transport.close()
            return
        self._arm()  # the first request must arrive in time, too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _READING and not self.transport.is_closing():
            if self._deadline is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state in _READING and not self.transport.is_closing():
            # No answer: a client this slow is not the apiserver (which gave up long ago).
            self.transport.close()
