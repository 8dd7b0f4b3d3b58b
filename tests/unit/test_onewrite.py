"""webhook.onewrite: the writes of one event-loop step leave as one write; closing flushes first."""

from __future__ import annotations

import asyncio
from typing import Any

from webhook import onewrite


class Recording:
    """A transport that records what reaches it (the socket side of the proxy)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_step_are_joined_and_flushed_after_it() -> None:
    async def scenario() -> list[bytes]:
        real = Recording()
        proxy = onewrite.Coalescing(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        proxy.write(b"HTTP/1.1 200 OK\r\n\r\n")
        proxy.write(bytearray(b"{}"))
        assert real.written == []  # nothing leaves before the step ends
        await asyncio.sleep(0)
        proxy.write(b"next")
        await asyncio.sleep(0)
        return real.written

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next"]


def test_close_flushes_what_is_pending_and_other_calls_reach_the_transport() -> None:
    async def scenario() -> Recording:
        real = Recording()
        proxy = onewrite.Coalescing(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        proxy.write(b"answer with Connection: close")
        assert proxy.get_extra_info("peername") == ("127.0.0.1", 1)
        proxy.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
        return real

    real = asyncio.run(scenario())
    assert real.written == [b"answer with Connection: close"] and real.closed


def test_after_flush_runs_once_the_answer_is_written_in_the_same_step() -> None:
    async def scenario() -> list[str]:
        real = Recording()
        proxy = onewrite.Coalescing(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen: list[str] = []
        proxy.write(b"answer")
        proxy.after_flush(lambda: seen.append(f"recorded after {real.written}"))
        assert seen == []  # not before the answer has left
        await asyncio.sleep(0)
        proxy.after_flush(lambda: seen.append("nothing pending: soon"))
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(scenario()) == ["recorded after [b'answer']", "nothing pending: soon"]
