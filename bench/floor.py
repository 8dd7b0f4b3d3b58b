"""The floor: a no-op ASGI app served exactly like the webhook, answering a constant allow.

Whatever this reaches is what uvicorn + TLS + HTTP/1.1 can do on this machine; the webhook's
throughput is reported as a fraction of it, measured in the same run.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from webhook import server

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ALLOW = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"%s","allowed":true}}'
)
UID = b'"uid":"'


def allow(body: bytes) -> bytes:
    """The constant allow, echoing the request's uid as the apiserver requires.

    The apiserver writes ``request.uid`` before the object, so the first ``"uid"`` is the request's;
    a byte search is all a no-op webhook needs (no JSON parse: that is the guard's cost, not the hop's).
    """
    start = body.find(UID) + len(UID)
    return ALLOW % body[start : body.find(b'"', start)] if start >= len(UID) else ALLOW % b""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    more = True
    while more:  # read the whole body, as the webhook must
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    answer = allow(b"".join(chunks))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser(description="no-op admission webhook (benchmark floor)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = server.Settings(host="127.0.0.1", port=args.port, cert_dir=args.cert_dir, log_level="warning")
    server.uvicorn_server(app, settings).run()


if __name__ == "__main__":
    main()
