"""The serving TLS context, replaceable as a whole while serving.

An ``SSLContext`` holds one certificate per key type. Loading a rotated RSA pair into a context that
served an ECDSA pair adds the RSA certificate next to the old ECDSA one, and a client that offers
ECDSA keeps getting the old certificate until it expires. So a rotation never loads into the live
context: it builds a complete new context, and the listening socket's context hands every new
handshake to whichever context is current (``sni_callback`` runs for every ClientHello, with or
without a server name, before a certificate is chosen). Connections already open keep theirs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2 or newer, HTTP/1.1 only, this one pair (any key type); raises OSError or SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


class Switch:
    """``listening`` goes to the server once; ``replace`` makes new handshakes use another pair.

    ``configure`` is applied to every context built (e.g. ``clientauth.require``: the client CA), so
    a rotated context verifies clients exactly as the first one did.
    """

    def __init__(
        self, cert_file: Path, key_file: Path, configure: Callable[[ssl.SSLContext], None] | None = None
    ) -> None:
        self.configure = configure
        self.current = self._build(cert_file, key_file)
        # Built like the others so that a handshake is complete even before the callback runs.
        self.listening = self._build(cert_file, key_file)
        self.listening.sni_callback = self._select

    def _build(self, cert_file: Path, key_file: Path) -> ssl.SSLContext:
        context = server_context(cert_file, key_file)
        if self.configure is not None:
            self.configure(context)
        return context

    def _select(self, connection: ssl.SSLObject, _: str | None, __: ssl.SSLContext) -> None:
        connection.context = self.current

    def replace(self, cert_file: Path, key_file: Path) -> None:
        """Serve this pair from the next handshake on; a bad pair raises and changes nothing."""
        self.current = self._build(cert_file, key_file)
