"""Server-side TLS over a plain asyncio transport, with buffers sized for 512-byte blocks.

Why not ``asyncio.start_server(ssl=...)``: asyncio's SSLProtocol allocates a 256 KiB read buffer per
connection (``SSLProtocol.max_size``), a StreamReader on top may buffer 64 KiB more, and the application
only learns of a connection once TLS is done, so sockets stuck in the handshake cannot be counted. On
Python 3.11.0-3.11.7 a failed handshake also leaves that protocol in a reference cycle until the cyclic
GC runs (CPython gh-109534, fixed in 3.11.8); none of that code runs here.

Theory of operation: the listener accepts plain TCP and creates one ``TlsConnection`` per socket. TLS
runs through an ``ssl.SSLObject`` over two ``MemoryBIO``s, created at the first received byte (a silent
socket costs only this object). Received bytes land in one receive buffer shared by every connection
(the loop is single-threaded and ``buffer_updated`` follows ``recv_into`` at once) and move straight
into the connection's incoming BIO. Decrypted bytes are kept only until a whole block can be taken; above
``READ_AHEAD_BYTES`` the socket stops being read until the reader catches up (back-pressure reaches the
client through TCP). States: ACCEPTED → HANDSHAKE (first byte) → OPEN (TLS done, ``on_ready``) → CLOSED
(``on_lost``, exactly once for every socket whose ``connection_made`` ran). The TLS deadline is a timer,
not a task: a connection gets a task only when TLS is done.

Why one module of about 330 lines: one connection's state machine over one ``SSLObject``; its states, buffers and
timer are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
from collections.abc import Callable
from typing import Final

from ntf_server.transport.blocks import ConnectionClosed
from ntf_server.transport.tls import tls_unique

RECV_BUFFER_BYTES: Final = 64 * 1024  # shared by all connections; a TLS record is at most ~16.7 KB
READ_CHUNK_BYTES: Final = 16 * 1024  # plaintext taken from the SSLObject per read() (one TLS record)
READ_AHEAD_BYTES: Final = 16 * 512  # decrypted bytes held before the socket stops being read
CLOSE_TIMEOUT_S: Final = 2.0
# TCP keep-alive as the Haskell server (defaultKeepAliveOpts): a vanished phone is dropped in ~90 s.
KEEPALIVE_IDLE_S: Final = 30
KEEPALIVE_INTERVAL_S: Final = 15
KEEPALIVE_COUNT: Final = 4

_recv_buffer = memoryview(bytearray(RECV_BUFFER_BYTES))


class Phase(enum.Enum):
    ACCEPTED = "accepted"
    HANDSHAKE = "tls-handshake"
    OPEN = "open"
    CLOSED = "closed"


def set_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class TlsConnection(asyncio.BufferedProtocol):
    """One accepted socket: TLS handshake, then whole blocks in and out (the ``Blocks`` interface)."""

    __slots__ = ("_admit", "_ctx", "_drain", "_eof", "_error", "_first_byte_timeout", "_in", "_lost", "_on_lost",
                 "_on_ready", "_out", "_paused", "_plain", "_read_timeout", "_sslobj", "_timer", "_tls_deadline_at",
                 "_tls_timeout", "_transport", "_waiter", "_write_paused", "_write_timeout", "block_size", "opened",
                 "peer", "phase")

    def __init__(
        self,
        ctx: ssl.SSLContext,
        *,
        block_size: int,
        tls_timeout_s: float,
        read_timeout_s: float,
        write_timeout_s: float,
        admit: Callable[[TlsConnection], bool],
        on_ready: Callable[[TlsConnection], None],
        on_lost: Callable[[TlsConnection], None],
        first_byte_timeout_s: float | None = None,
    ) -> None:
        """``first_byte_timeout_s``: drop a socket that sends nothing this long (None: ``tls_timeout_s``)."""
        self._ctx = ctx
        self.block_size = block_size
        self._tls_timeout = tls_timeout_s
        self._first_byte_timeout = min(first_byte_timeout_s or tls_timeout_s, tls_timeout_s)
        self._tls_deadline_at = 0.0
        self._read_timeout = read_timeout_s
        self._write_timeout = write_timeout_s
        self._admit = admit
        self._on_ready = on_ready
        self._on_lost = on_lost
        self.phase = Phase.ACCEPTED
        self.opened = False
        self.peer = ""
        self._transport: asyncio.Transport | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._sslobj: ssl.SSLObject | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._plain = bytearray()
        self._eof = False
        self._error: str | None = None
        self._paused = False
        self._write_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<TlsConnection {self.phase.value} buffered={len(self._plain)}>"

    # ------------------------------------------------------------ asyncio protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        if not self._admit(self):
            self.phase = Phase.CLOSED
            transport.abort()
            return
        self._lost = asyncio.get_running_loop().create_future()
        set_keepalive(transport.get_extra_info("socket"))
        loop = asyncio.get_running_loop()
        self._tls_deadline_at = loop.time() + self._tls_timeout
        # a silent socket holds a handshake slot: it gets only the short first-byte deadline
        self._timer = loop.call_later(self._first_byte_timeout, self._tls_deadline)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _recv_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.phase is Phase.CLOSED:
            return
        if self._sslobj is None:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._sslobj = self._ctx.wrap_bio(self._in, self._out, server_side=True)
            self.phase = Phase.HANDSHAKE
            if self._timer is not None:  # the first byte: the whole TLS deadline applies, from accept
                self._timer.cancel()
                self._timer = asyncio.get_running_loop().call_at(self._tls_deadline_at, self._tls_deadline)
        assert self._in is not None
        self._in.write(_recv_buffer[:nbytes])
        if self.phase is Phase.HANDSHAKE:
            self._handshake()
        else:
            self._decrypt()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:  # refused in connection_made: never counted
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        was_open = self.phase is Phase.OPEN
        self.phase = Phase.CLOSED
        self._eof = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if not self._lost.done():
            self._lost.set_result(None)
        self._on_lost(self)
        if not was_open:
            self._release_tls()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ------------------------------------------------------------ TLS

    def _tls_deadline(self) -> None:
        self._timer = None
        if self.phase in (Phase.ACCEPTED, Phase.HANDSHAKE):
            self._error = "no first byte in time" if self.phase is Phase.ACCEPTED else "TLS handshake deadline"
            self.abort()

    def _handshake(self) -> None:
        assert self._sslobj is not None
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as e:
            self._error = f"TLS handshake failed: {e.reason or e}"
            self._flush()  # the alert, if OpenSSL wrote one
            self.abort()
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.phase = Phase.OPEN
        self.opened = True
        self._on_ready(self)
        self._decrypt()  # application data may have come in the same segment

    def _decrypt(self) -> None:
        assert self._sslobj is not None
        while len(self._plain) < READ_AHEAD_BYTES:
            try:
                chunk = self._sslobj.read(READ_CHUNK_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._eof = True
                break
            except ssl.SSLError as e:
                self._error = f"TLS error: {e.reason or e}"
                self._eof = True
                self.abort()
                break
            if not chunk:
                self._eof = True
                break
            self._plain += chunk
        if len(self._plain) >= READ_AHEAD_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._flush()  # post-handshake messages (key updates) may need an answer
        self._wake()

    def _flush(self) -> None:
        if self._out is not None and self._out.pending and self._transport is not None:
            self._transport.write(self._out.read())

    def _release_tls(self) -> None:
        """Drop the TLS state of a connection that never opened (nobody will ask for it)."""
        self._sslobj = self._in = self._out = None

    # ------------------------------------------------------------ the Blocks interface

    @property
    def ssl_object(self) -> ssl.SSLObject:
        if self._sslobj is None or self.phase is not Phase.OPEN:
            raise ConnectionClosed("TLS is not established")
        return self._sslobj

    @property
    def error(self) -> str | None:
        """Why TLS failed or broke (None: no TLS error)."""
        return self._error

    def session_id(self) -> bytes:
        return tls_unique(self.ssl_object)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait_for(self, nbytes: int) -> None:
        while len(self._plain) < nbytes and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_block(self, idle_timeout_s: float | None = None) -> bytes:
        """Read one whole block. ``idle_timeout_s`` bounds the wait for its first byte (None = forever)."""
        async with asyncio.timeout(idle_timeout_s):
            await self._wait_for(1)
        async with asyncio.timeout(self._read_timeout):
            await self._wait_for(self.block_size)
        if len(self._plain) < self.block_size:
            raise ConnectionClosed(self._error or ("EOF inside a block" if self._plain else "EOF"))
        block = bytes(self._plain[: self.block_size])
        del self._plain[: self.block_size]
        if not self._plain:
            self._plain.clear()  # frees the buffer: an idle connection holds no plaintext memory
        if self._paused and self.phase is Phase.OPEN and len(self._plain) < READ_AHEAD_BYTES // 2:
            self._decrypt()  # records OpenSSL already holds come first
            if len(self._plain) < READ_AHEAD_BYTES and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
        return block

    async def write_block(self, block: bytes) -> None:
        if len(block) != self.block_size:
            raise ValueError(f"block of {len(block)} bytes, expected {self.block_size}")
        if self.phase is not Phase.OPEN or self._transport is None or self._transport.is_closing():
            raise ConnectionClosed(self._error or "connection closed")
        try:
            self.ssl_object.write(block)
        except ssl.SSLError as e:
            raise ConnectionClosed(str(e)) from e
        self._flush()
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self._drain
            finally:
                self._drain = None
            if self._transport.is_closing():
                raise ConnectionClosed("connection lost while writing")

    def abort(self) -> None:
        """Drop the connection at once (shutdown, deadlines): pending reads end with ``ConnectionClosed``."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """Send close_notify, flush, close; abort if the peer does not take the bytes in time."""
        transport = self._transport
        if transport is None or self._lost is None:
            return
        if self.phase is Phase.OPEN and self._sslobj is not None and not transport.is_closing():
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: close_notify written, answer not awaited
                self._sslobj.unwrap()
            self._flush()
        transport.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(self._lost)
        except TimeoutError:
            transport.abort()
        self._release_tls()
