"""SMP connections through a SOCKS5 proxy (§3.3, e.g. Tor's SocksPort): a ``TcpOpener`` for
``connect.open_smp``, built on python-socks (asyncio backend).

Remote DNS. The CONNECT request carries the host **name** (ATYP 3, ``rdns=True``); nothing is resolved
on this machine. An ``.onion`` name can only be resolved by Tor, and resolving a public name locally
would leak through the local resolver which SMP servers this ntf-server talks to.

Isolation. Tor (``IsolateSOCKSAuth``, on by default for a SocksPort) never puts two streams with
different SOCKS username/password on the same circuit. Every SMP server therefore gets its own
credentials, derived as HMAC-SHA256(process key, server address): a relay that sees one circuit cannot
link the SMP servers this ntf-server serves, and one slow or attacked server's circuit does not carry the
others. The same server gets the same credentials for the life of the process, so reconnects may reuse
its circuit (Tor still rotates circuits on its own schedule, MaxCircuitDirtiness). The key is random per
process: credentials say nothing about the server (a keyed hash, never the address in clear) and are not
stable across restarts. Haskell does the same per transport session ("per-session isolated usernames",
``SocksIsolateByAuth``). A proxy that requires its own fixed password is not supported by this scheme.

Errors. python-socks' exceptions become ``OSError``/``TimeoutError`` with the proxy and target named,
which ``open_smp`` reports as a failed host and tries the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
from dataclasses import dataclass
from typing import Final

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy

from ntf_server.protocol.encoding import SMPServer
from ntf_server.subscriber.connect import TcpOpener

ISOLATION_KEY_BYTES: Final = 32
CREDENTIAL_BYTES: Final = 16  # of the HMAC, per field, as hex: 32 ASCII characters (RFC 1929 allows 255)
_DOMAIN: Final = b"ntf-server SOCKS isolation v1\x00"
PROXY_TIMEOUT_S: Final = 120.0  # python-socks' own cap; open_smp's per-host deadline normally ends it first


@dataclass(frozen=True, slots=True)
class SocksCredentials:
    """RFC 1929 username/password of one SMP server's proxy streams (not a secret: an isolation tag)."""

    username: str
    password: str


class SocksIsolation:
    """Per-SMP-server credentials from one per-process key (see the module docstring)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = os.urandom(ISOLATION_KEY_BYTES) if key is None else key
        if len(self._key) < ISOLATION_KEY_BYTES:
            raise ValueError(f"isolation key must be at least {ISOLATION_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return "<SocksIsolation>"

    def credentials(self, server: SMPServer) -> SocksCredentials:
        # The whole address (key hash, every host, port): the pool's identity of a server.
        digest = hmac.new(self._key, _DOMAIN + server.to_uri().encode(), hashlib.sha256).digest()
        return SocksCredentials(digest[:CREDENTIAL_BYTES].hex(), digest[CREDENTIAL_BYTES:2 * CREDENTIAL_BYTES].hex())


def socks_opener(proxy_host: str, proxy_port: int, credentials: SocksCredentials) -> TcpOpener:
    """A ``TcpOpener`` that asks the SOCKS5 proxy at ``proxy_host:proxy_port`` to CONNECT to ``host:port``
    by name, authenticating with ``credentials``; returns the connected socket (TLS is layered on it)."""
    where = f"SOCKS5 proxy {proxy_host}:{proxy_port}"

    async def open_via_proxy(host: str, port: int) -> socket.socket:
        proxy = Proxy(ProxyType.SOCKS5, proxy_host, proxy_port, username=credentials.username,
                      password=credentials.password, rdns=True, loop=asyncio.get_running_loop())
        try:
            return await proxy.connect(host, port, timeout=PROXY_TIMEOUT_S)
        except ProxyTimeoutError as e:
            raise TimeoutError(f"{where}: timed out") from e
        except ProxyConnectionError as e:
            raise ConnectionError(f"{where} unreachable: {e.strerror or e}") from e
        except ProxyError as e:  # a SOCKS reply: auth refused, host unreachable, connection refused …
            raise ConnectionError(f"{where}: {e}") from e

    return open_via_proxy
