"""The NTF accept loop: connection caps, TLS, per-connection lifetime (§1.1, §6.3).

The listener accepts plain TCP and runs TLS itself (``server_tls.TlsConnection``), so every accepted
socket is counted from accept (``admission.Admission``): above ``max_connections`` sockets in all,
``max_handshakes`` still in a handshake or ``max_connections_per_ip`` from one client address, a socket
is closed at once, before any TLS work (counted in ``conn_refused`` and ``conn_refused_<limit>``; so is
one over ``max_handshakes_per_ip`` in handshake from one address). A socket that sends nothing within
``first_byte_timeout_s`` is dropped (a real client starts TLS at once); one that finishes TLS within
``tls_timeout_s`` gets a task: NTF handshake, then ``NtfConnection``.
``stop()`` closes the listening socket, drops open connections (clients reconnect; the SimpleX agent does
so on its own) and gives their tasks ``shutdown_timeout_s`` to finish before cancelling them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Final

from ntf_server.handlers import NtfHandlers
from ntf_server.observability.logevents import emit
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter, Family
from ntf_server.observability.stats import Stats
from ntf_server.protocol.framing import NTF_BLOCK_SIZE
from ntf_server.protocol.ntf_handshake import NtfHandshakeFailed
from ntf_server.transport.admission import Admission, Caps, Refusal
from ntf_server.transport.blocks import ConnectionClosed
from ntf_server.transport.memory import MemoryReturner
from ntf_server.transport.ntf_connection import NtfConnection, ServerIdentity, server_handshake
from ntf_server.transport.quota import FrontDoor
from ntf_server.transport.ratelimit import address_key
from ntf_server.transport.server_tls import TlsConnection

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
CONN_REFUSED_BY_LIMIT: Final = Family("conn_refused_by_limit", "limit",
                                      "NTF client sockets refused at accept, by the limit that refused them")
CONN_ACCEPTED: Final = Counter("conn_accepted", "NTF client sockets accepted")
CONN_REFUSED: Final = Counter("conn_refused", "NTF client sockets refused at accept by a connection limit")
CONN_REFUSED_CONNECTIONS: Final = Counter("conn_refused_connections", "Refused: server.max_connections reached",
                                          CONN_REFUSED_BY_LIMIT, "connections")
CONN_REFUSED_HANDSHAKES: Final = Counter("conn_refused_handshakes", "Refused: server.max_handshakes reached",
                                         CONN_REFUSED_BY_LIMIT, "handshakes")
CONN_REFUSED_PER_IP: Final = Counter("conn_refused_per_ip", "Refused: server.max_connections_per_ip reached",
                                     CONN_REFUSED_BY_LIMIT, "per_ip")
CONN_REFUSED_HANDSHAKES_PER_IP: Final = Counter("conn_refused_handshakes_per_ip",
                                                "Refused: server.max_handshakes_per_ip reached")
CONN_TLS_FAILED: Final = Counter("conn_tls_failed", "NTF client sockets closed before TLS completed")
CONN_HANDSHAKE_FAILED: Final = Counter("conn_handshake_failed", "NTF client connections with a failed NTF handshake")
CONN_CLOSED: Final = Counter("conn_closed", "NTF client sockets closed")
_REFUSED_BY: Final = {Refusal.CONNECTIONS: CONN_REFUSED_CONNECTIONS, Refusal.HANDSHAKES: CONN_REFUSED_HANDSHAKES,
                      Refusal.PER_IP: CONN_REFUSED_PER_IP, Refusal.HANDSHAKES_PER_IP: CONN_REFUSED_HANDSHAKES_PER_IP}


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    max_connections: int = 10000
    tls_timeout_s: float = 60.0
    handshake_timeout_s: float = 30.0
    block_read_timeout_s: float = 30.0
    block_write_timeout_s: float = 30.0
    idle_timeout_s: float = 600.0  # 0 = never
    shutdown_timeout_s: float = 10.0
    max_handshakes: int = 1000
    max_connections_per_ip: int = 500
    first_byte_timeout_s: float = 10.0
    max_handshakes_per_ip: int | None = None
    max_auth_failures: int = 0  # 0 = never close for AUTH answers


class NtfListener:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        identity: ServerIdentity,
        handlers: NtfHandlers,
        stats: Stats,
        limits: ListenerLimits,
        quotas: FrontDoor | None = None,
    ) -> None:
        self._ssl = ssl_context
        self._identity = identity
        self._handlers = handlers
        self._stats = stats
        self._limits = limits
        self._quotas = quotas
        self.handshake_failures = CountedLog(log, "NTF handshake failed", event="listener.handshake_failed")
        self._admission = Admission(Caps(limits.max_connections, limits.max_handshakes,
                                         limits.max_connections_per_ip, limits.max_handshakes_per_ip))
        self._server: asyncio.Server | None = None
        self._conns: dict[TlsConnection, asyncio.Task[None] | None] = {}  # every admitted socket
        self._handshaking: set[TlsConnection] = set()
        self._memory = MemoryReturner(lambda: len(self._conns))
        self.started = asyncio.Event()

    def __repr__(self) -> str:
        state = "listening" if self._server is not None else "stopped"
        return f"<NtfListener {state} port={self.port if self._server else '-'} {self._admission!r}>"

    @property
    def connections(self) -> int:
        """Every accepted socket that is still open, in any phase."""
        return len(self._conns)

    @property
    def listening(self) -> bool:
        """The listening socket is open (between ``start`` and ``stop``)."""
        return self._server is not None and self._server.is_serving()

    @property
    def handshakes(self) -> int:
        return self._admission.handshaking

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str | None, port: int, *, reuse_port: bool = False) -> None:
        """``reuse_port``: the workers of one instance each listen on the same port (``SO_REUSEPORT``); the
        kernel spreads new connections over their sockets."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host or None, port, backlog=1024,
                                                reuse_port=reuse_port or None)
        self.started.set()

    def _protocol(self) -> TlsConnection:
        lim = self._limits
        return TlsConnection(self._ssl, block_size=NTF_BLOCK_SIZE, tls_timeout_s=lim.tls_timeout_s,
                             first_byte_timeout_s=lim.first_byte_timeout_s,
                             read_timeout_s=lim.block_read_timeout_s, write_timeout_s=lim.block_write_timeout_s,
                             admit=self._admit, on_ready=self._ready, on_lost=self._lost)

    def _admit(self, conn: TlsConnection) -> bool:
        refusal = self._admission.admit(address_key(conn.peer))
        if refusal is not None:
            self._stats.incr(CONN_REFUSED)
            self._stats.incr(_REFUSED_BY[refusal])
            return False
        self._conns[conn] = None
        self._handshaking.add(conn)
        self._stats.incr(CONN_ACCEPTED)
        self._memory.connection_started()
        return True

    def _ready(self, conn: TlsConnection) -> None:
        self._conns[conn] = asyncio.create_task(self._serve(conn))

    def _handshake_done(self, conn: TlsConnection) -> None:
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            self._admission.handshake_done(address_key(conn.peer))

    def _lost(self, conn: TlsConnection) -> None:
        task = self._conns.pop(conn, None)
        handshaking = conn in self._handshaking
        self._handshaking.discard(conn)
        self._admission.release(address_key(conn.peer), handshaking=handshaking)
        self._stats.incr(CONN_CLOSED)
        if not conn.opened:
            self._stats.incr(CONN_TLS_FAILED)
            log.debug("%s", conn.error or "closed during the TLS handshake")
        if task is None:
            self._memory.connection_ended()
        else:  # its objects are freed when the task ends
            task.add_done_callback(lambda _: self._memory.connection_ended())

    async def _serve(self, conn: TlsConnection) -> None:
        lim = self._limits
        try:
            params, dh = await server_handshake(conn, self._identity, lim.handshake_timeout_s)
            self._handshake_done(conn)
            quota = self._quotas.for_peer(conn.peer) if self._quotas else None
            ntf = NtfConnection(conn, params, dh, self._handlers, self._stats, lim.idle_timeout_s or None, quota,
                                max_auth_failures=lim.max_auth_failures)
            await ntf.run()
        except NtfHandshakeFailed as e:  # not our client: closed without an error block
            self._stats.incr(CONN_HANDSHAKE_FAILED)
            self.handshake_failures.event(str(e))  # a flood of bad hellos is one line a minute
        except (ConnectionClosed, TimeoutError):
            pass  # the client went away or stalled: an ordinary end, counted when the socket closes
        except Exception as e:
            emit(log, "listener.connection_failed", {"error": type(e).__name__}, exc_info=True)
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Connections carry no state worth waiting for (requests are atomic in the store), and idle
        # clients would never end on their own: drop them so their tasks finish normally.
        tasks = {t for t in self._conns.values() if t is not None}
        for conn in list(self._conns):
            conn.abort()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._limits.shutdown_timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._memory.close()
        await self._server.wait_closed()
        self._server = None
