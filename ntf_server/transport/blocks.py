"""Fixed-size block I/O over an asyncio stream (§1.4): read exactly one block, write one block.

A short read is the peer closing (``ConnectionClosed``); a block that starts but does not finish within the
read deadline is a stalled peer (``TimeoutError`` → the caller closes). Waiting for the *first* byte of the
next block is governed separately by the idle timeout, so a quiet but healthy client is not cut off by the
per-block deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from ntf_server.transport.tls import tls_unique


class ConnectionClosed(Exception):
    """The peer closed the connection (EOF, possibly in the middle of a block)."""


class Blocks(Protocol):
    """What the NTF handshake and connection need from a TLS connection: ``BlockStream`` (clients, over
    asyncio streams) and ``server_tls.TlsConnection`` (the server's own TLS) both provide it."""

    @property
    def block_size(self) -> int: ...

    @property
    def ssl_object(self) -> ssl.SSLObject: ...

    def session_id(self) -> bytes: ...

    async def read_block(self, idle_timeout_s: float | None = None) -> bytes: ...

    async def write_block(self, block: bytes) -> None: ...


class BlockStream:
    __slots__ = ("_block_size", "_read_timeout", "_reader", "_write_timeout", "_writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        block_size: int,
        *,
        read_timeout_s: float,
        write_timeout_s: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._block_size = block_size
        self._read_timeout = read_timeout_s
        self._write_timeout = write_timeout_s

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def ssl_object(self) -> ssl.SSLObject:
        obj = self._writer.get_extra_info("ssl_object")
        if not isinstance(obj, ssl.SSLObject):
            raise ConnectionClosed("not a TLS connection")
        return obj

    def session_id(self) -> bytes:
        return tls_unique(self.ssl_object)

    async def read_block(self, idle_timeout_s: float | None = None) -> bytes:
        """Read one whole block. ``idle_timeout_s`` bounds the wait for its first byte (None = forever)."""
        try:
            async with asyncio.timeout(idle_timeout_s):
                first = await self._reader.read(1)
            if not first:
                raise ConnectionClosed("EOF")
            async with asyncio.timeout(self._read_timeout):
                rest = await self._reader.readexactly(self._block_size - 1)
        except asyncio.IncompleteReadError as e:
            raise ConnectionClosed("EOF inside a block") from e
        except (ConnectionError, ssl.SSLError) as e:
            raise ConnectionClosed(str(e)) from e
        return first + rest

    async def write_block(self, block: bytes) -> None:
        if len(block) != self._block_size:
            raise ValueError(f"block of {len(block)} bytes, expected {self._block_size}")
        try:
            self._writer.write(block)
            async with asyncio.timeout(self._write_timeout):
                await self._writer.drain()
        except (ConnectionError, ssl.SSLError) as e:
            raise ConnectionClosed(str(e)) from e

    def abort(self) -> None:
        """Drop the connection at once (shutdown): pending reads end with ``ConnectionClosed``."""
        self._writer.transport.abort()

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            async with asyncio.timeout(2):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
