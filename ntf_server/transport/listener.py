"""The NTF accept loop: TLS listener, connection cap, per-connection lifetime (spec §1.1, §6.3).

Each accepted connection runs in its own task: handshake within its deadline, then ``NtfConnection``.
Connections above ``max_connections`` are closed right after accept (counted). ``stop()`` closes the
listening socket, drops open connections (clients reconnect; the SimpleX agent does so on its own) and
gives their tasks ``shutdown_timeout_s`` to finish before cancelling them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from ntf_server.handlers import NtfHandlers
from ntf_server.protocol.transport import NTF_BLOCK_SIZE
from ntf_server.stats import Stats
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.ntf_connection import HandshakeFailed, NtfConnection, ServerIdentity, server_handshake
from ntf_server.transport.quota import RegistrationLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    max_connections: int = 10000
    tls_timeout_s: float = 60.0
    handshake_timeout_s: float = 30.0
    block_read_timeout_s: float = 30.0
    block_write_timeout_s: float = 30.0
    idle_timeout_s: float = 0.0  # 0 = never
    shutdown_timeout_s: float = 10.0


class NtfListener:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        identity: ServerIdentity,
        handlers: NtfHandlers,
        stats: Stats,
        limits: ListenerLimits,
        quotas: RegistrationLimits | None = None,
    ) -> None:
        self._ssl = ssl_context
        self._identity = identity
        self._handlers = handlers
        self._stats = stats
        self._limits = limits
        self._quotas = quotas
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], BlockStream] = {}
        self.started = asyncio.Event()

    def __repr__(self) -> str:
        state = "listening" if self._server is not None else "stopped"
        return f"<NtfListener {state} port={self.port if self._server else '-'} conns={len(self._conns)}>"

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str | None, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host or None, port, ssl=self._ssl, ssl_handshake_timeout=self._limits.tls_timeout_s,
            ssl_shutdown_timeout=2.0,
        )
        self.started.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        lim = self._limits
        stream = BlockStream(reader, writer, NTF_BLOCK_SIZE, read_timeout_s=lim.block_read_timeout_s,
                             write_timeout_s=lim.block_write_timeout_s)
        if len(self._conns) >= lim.max_connections:
            self._stats.incr("conn_refused")
            await stream.close()
            return
        self._conns[task] = stream
        self._stats.incr("conn_accepted")
        try:
            params, dh = await server_handshake(stream, self._identity, lim.handshake_timeout_s)
            quota = self._quotas.for_peer(writer.get_extra_info("peername")) if self._quotas else None
            conn = NtfConnection(stream, params, dh, self._handlers, self._stats, lim.idle_timeout_s or None, quota)
            await conn.run()
        except HandshakeFailed as e:
            self._stats.incr("conn_handshake_failed")
            log.info("handshake failed: %s", e)
        except (ConnectionClosed, TimeoutError):
            pass  # the client went away or stalled: an ordinary end, counted below
        except Exception:
            log.exception("connection failed")
        finally:
            self._conns.pop(task, None)
            self._stats.incr("conn_closed")
            await stream.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._conns:
            # Connections carry no state worth waiting for (requests are atomic in the store), and idle
            # clients would never end on their own: drop them so their tasks finish normally.
            for stream in self._conns.values():
                stream.abort()
            _, pending = await asyncio.wait(set(self._conns), timeout=self._limits.shutdown_timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
