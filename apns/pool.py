"""Connections for one (endpoint, key): a bounded set, opened on demand, one at a time.

Pools decide synchronously and do I/O outside any lock (STYLE 8): `acquire()` picks the connection
with the most free stream slots and reserves one without awaiting; only when every connection is full and
the bound allows does one caller open a new connection (single-flight) while the others wait for a slot.
A freed slot is handed straight to the oldest waiter (reserved on its behalf), so waiting costs one wake-up
and no re-scan, and waiters are served in order.
Each new connection starts from an uncached DNS lookup (Apple: "Make an uncached DNS query ... before each
connection"); Python's getaddrinfo has no cache of its own.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from dataclasses import dataclass

from apns.connection import ApnsConnection, ConnectionCounters, ConnectionSettings
from apns.errors import ConnectFailed, ConnectionLost


@dataclass(frozen=True)
class Endpoint:
    """Where to send: Apple's hosts, or a local simulator (`ca_file`, or `tls=False` for h2c)."""

    host: str
    port: int = 443
    ca_file: str | None = None
    tls: bool = True


PRODUCTION = Endpoint("api.push.apple.com")
DEVELOPMENT = Endpoint("api.sandbox.push.apple.com")


def make_ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Standard verification against the system store, or only `ca_file` when given (the simulator)."""
    ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


class Pool:
    def __init__(
        self,
        endpoint: Endpoint,
        settings: ConnectionSettings,
        counters: ConnectionCounters,
        max_connections: int,
        connect_timeout_s: float,
    ) -> None:
        self.endpoint = endpoint
        self._settings = settings
        self._counters = counters
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._ssl = make_ssl_context(endpoint) if endpoint.tls else None
        scheme = b"https" if endpoint.tls else b"http"
        authority = endpoint.host if endpoint.port == 443 else f"{endpoint.host}:{endpoint.port}"
        self.pseudo: tuple[tuple[bytes, bytes], ...] = (
            (b":method", b"POST"),
            (b":scheme", scheme),
            (b":authority", authority.encode()),
        )
        self.conns: list[ApnsConnection] = []
        self._connecting = False
        self._waiters: deque[asyncio.Future[ApnsConnection | None]] = deque()
        self.closed = False
        self.opened = 0
        self.connect_failures = 0

    async def acquire(self, urgent: bool = False) -> ApnsConnection:
        """A connection with one stream slot reserved for the caller. `urgent` waiters (pushes the server
        refused unprocessed, already delayed once) queue in front, so a busy pool cannot starve them."""
        while True:
            if self.closed:
                raise ConnectionLost("client closed", processed=False)
            # No queue jumping past earlier waiters (and no scan while there are some: wake() serves them).
            best = self._pick() if urgent or not self._waiters else None
            if best is not None:
                best.reserved += 1
                return best
            if best is None and not self._connecting and len(self.conns) < self._max:
                await self._connect()
                continue
            fut: asyncio.Future[ApnsConnection | None] = asyncio.get_running_loop().create_future()
            if urgent:
                self._waiters.appendleft(fut)
            else:
                self._waiters.append(fut)
            try:
                got = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and (slot := fut.result()) is not None:
                    slot.reserved -= 1  # handed a slot while being cancelled: give it back
                    self.wake()
                raise
            if got is not None:
                return got  # the slot was reserved for us by wake()

    def _pick(self) -> ApnsConnection | None:
        """The connection with the most free slots."""
        best: ApnsConnection | None = None
        best_free = 0
        for conn in self.conns:
            free = conn.available
            if free > best_free:
                best, best_free = conn, free
        return best

    def wake(self, hint: ApnsConnection | None = None) -> None:
        """Slots freed on `hint` (or anywhere, when None): hand them to waiters, oldest first."""
        waiters = self._waiters
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            conn = self._pick() if hint is None else hint if hint.available > 0 else None
            if conn is None:
                break
            conn.reserved += 1
            waiters.popleft().set_result(conn)
        if waiters and not self._connecting and len(self.conns) < self._max:
            self._release_one()  # nothing free: let one waiter go and open a connection

    def _release_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_all(self) -> None:
        """Connections changed: every waiter re-decides (connect, or wait again)."""
        self.wake()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _on_closed(self, conn: ApnsConnection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        self._wake_all()

    async def _connect(self) -> None:
        self._connecting = True
        try:
            conn = await asyncio.wait_for(self._open(), self._connect_timeout_s)
        except (OSError, TimeoutError, ConnectionLost) as exc:
            self.connect_failures += 1
            raise ConnectFailed(f"connect to {self.endpoint.host}:{self.endpoint.port} failed: {exc!r}") from exc
        finally:
            self._connecting = False
            self._wake_all()
        if self.closed:
            conn.close()
            return
        self.conns.append(conn)
        self.opened += 1

    async def _open(self) -> ApnsConnection:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        last: OSError = OSError(f"no address for {ep.host}")
        for family, _type, proto, _name, addr in infos:
            try:
                _tr, conn = await loop.create_connection(
                    lambda: ApnsConnection(self._settings, self._counters, self.wake, self._on_closed),
                    host=str(addr[0]),
                    port=ep.port,
                    family=family,
                    proto=proto,
                    ssl=self._ssl,
                    server_hostname=ep.host if self._ssl is not None else None,
                )
            except OSError as exc:
                last = exc
                continue
            if self._ssl is not None:
                sslobj = _tr.get_extra_info("ssl_object")
                if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                    conn.close()
                    raise OSError("server did not negotiate HTTP/2 (ALPN h2)")
            try:
                await conn.ready  # the server's SETTINGS tell us how many streams we may open
            except BaseException:
                conn.close()
                raise
            return conn
        raise last

    def close(self) -> None:
        self.closed = True
        for conn in list(self.conns):
            conn.close()
        self.conns.clear()
        self._wake_all()

    def __repr__(self) -> str:
        busy = sum(c.in_flight for c in self.conns)
        return (
            f"<Pool {self.endpoint.host}:{self.endpoint.port} {len(self.conns)}/{self._max} connections, "
            f"{busy} in flight, {len(self._waiters)} waiting>"
        )
