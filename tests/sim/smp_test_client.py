"""A thin asyncio SMP client for tests: real pinned TLS around the sans-IO handshake and session.

It is deliberately minimal (no reconnects, no timers): the production client is ``subscriber/client.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from ntf_server.protocol import smp_events as E
from ntf_server.protocol.framing import SMP_BLOCK_SIZE, SMP_CLIENT_VRANGE, RawTransmission, VersionRange
from ntf_server.protocol.smp_client import SmpHandshake, client_handshake
from ntf_server.protocol.smp_session import NotifierQueue, SmpClientSession
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.tls import connect_pinned, peer_chain_der, smp_client_context, tls_unique

TIMEOUT_S: Final = 10.0


async def open_stream(host: str, port: int, key_hash: bytes) -> BlockStream:
    reader, writer, _ = await connect_pinned(host, port, smp_client_context(), key_hash, timeout_s=TIMEOUT_S)
    return BlockStream(reader, writer, SMP_BLOCK_SIZE, read_timeout_s=TIMEOUT_S, write_timeout_s=TIMEOUT_S)


async def handshake(stream: BlockStream, key_hash: bytes, versions: VersionRange = SMP_CLIENT_VRANGE) -> SmpHandshake:
    async with asyncio.timeout(TIMEOUT_S):
        hello = await stream.read_block()
    ssl_obj = stream.ssl_object
    return client_handshake(hello, key_hash=key_hash, tls_unique=tls_unique(ssl_obj),
                            peer_chain=peer_chain_der(ssl_obj), versions=versions)


class SmpTestClient:
    def __init__(self, stream: BlockStream, session: SmpClientSession) -> None:
        self.stream = stream
        self.session = session
        self._events: list[E.SmpEvent] = []

    @classmethod
    async def connect(cls, host: str, port: int, key_hash: bytes,
                      versions: VersionRange = SMP_CLIENT_VRANGE) -> SmpTestClient:
        stream = await open_stream(host, port, key_hash)
        try:
            hs = await handshake(stream, key_hash, versions)
            await stream.write_block(hs.client_hello)
        except BaseException:
            await stream.close()
            raise
        return cls(stream, SmpClientSession(hs, now=asyncio.get_running_loop().time()))

    @property
    def version(self) -> int:
        return self.session.version

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def subscribe(self, queues: Sequence[NotifierQueue]) -> int:
        blocks = self.session.subscribe(queues)
        for b in blocks:
            await self._write(b)
        return len(blocks)

    async def ping(self) -> None:
        await self._write(self.session.ping())

    async def _write(self, block: bytes) -> None:
        await self.stream.write_block(block)
        self.session.block_written(now=self._now())

    async def read_raw(self) -> list[RawTransmission]:
        """One block as raw transmissions (for wire-form checks); they are processed too, events kept."""
        async with asyncio.timeout(TIMEOUT_S):
            block = await self.stream.read_block()
        items = self.session.open_block(block)
        self._events += self.session.handle_transmissions(items, now=self._now())
        return [i for i in items if isinstance(i, RawTransmission)]

    async def events(self, n: int, timeout_s: float = TIMEOUT_S) -> list[E.SmpEvent]:
        """The next ``n`` events (waits for more blocks as needed)."""
        async with asyncio.timeout(timeout_s):
            while len(self._events) < n:
                block = await self.stream.read_block()
                self._events += self.session.receive_block(block, now=self._now())
        out, self._events = self._events[:n], self._events[n:]
        return out

    async def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.stream.read_block()
        except ConnectionClosed:
            return True
        return False

    async def close(self) -> None:
        await self.stream.close()
