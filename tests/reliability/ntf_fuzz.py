"""The fuzzing client's I/O (shared by tests/reliability and tests/bench/fuzz_ntf.py): a pinned TLS
connection at a chosen NTF version with one registered token, fuzzed blocks each followed by a PING whose
PONG proves the connection still works; raw handshakes that answer the server hello with garbage."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

from ntf_inputs import Identity, batch_content, client_hello, fuzz_block

from ntf_server.protocol import ntf as P
from ntf_server.protocol.framing import NTF_BLOCK_SIZE, VersionRange, encode_transmission
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.tls import connect_pinned, ntf_client_context

REPLY_TIMEOUT_S = 10.0


class FuzzConnection:
    """One client connection at ``version`` that sends fuzzed blocks; it must stay served throughout."""

    def __init__(self, client: NtfClient, ident: Identity) -> None:
        self.client, self.ident = client, ident
        self.replies = 0
        self.errors: dict[str, int] = {}

    @classmethod
    async def open(cls, host: str, port: int, key_hash: bytes, version: int) -> FuzzConnection:
        client = await NtfClient.connect(host, port, key_hash, alpn=version > 1 or bool(os.urandom(1)[0] & 1),
                                         versions=VersionRange(version, version))
        app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
        assert isinstance(await app.register(client), P.IdTkn)
        return cls(client, Identity(client.params, client.server_dh, app.auth_key, app.token_id))

    async def fuzz(self, rng: random.Random, blocks: int, corpus: Sequence[bytes] = ()) -> None:
        """Send ``blocks`` fuzzed blocks then a PING; every reply must parse and the PONG must come."""
        for _ in range(blocks):
            await self.client.send_raw(fuzz_block(rng, self.ident, corpus))
        await self.ping()

    async def ping(self) -> None:
        corr = os.urandom(24)
        t = encode_transmission(self.client.params, corr, b"", P.encode_command(P.Ping()))
        await self.client.send_block(batch_content(self.client.params, [t]))
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:
                for c, _, resp in await self.client.read_replies():  # raises on a reply the app would reject
                    self.replies += 1
                    if isinstance(resp, P.Err):
                        self.errors[str(resp.error)] = self.errors.get(str(resp.error), 0) + 1
                    if c == corr:
                        assert resp == P.Pong(), resp
                        return

    async def close(self) -> None:
        await self.client.close()


async def garbage_handshake(host: str, port: int, key_hash: bytes, rng: random.Random) -> bool:
    """Answer the server hello with garbage; returns whether the server closed the connection on its own
    (False: it still waited for more, and we hung up)."""
    reader, writer, _ = await connect_pinned(host, port, ntf_client_context(alpn=rng.random() < 0.7), key_hash,
                                             timeout_s=REPLY_TIMEOUT_S)
    stream = BlockStream(reader, writer, NTF_BLOCK_SIZE, read_timeout_s=REPLY_TIMEOUT_S,
                         write_timeout_s=REPLY_TIMEOUT_S)
    try:
        await stream.read_block()  # the server hello
        writer.write(client_hello(rng, key_hash))
        await writer.drain()
        try:
            async with asyncio.timeout(0.5):
                while True:
                    await stream.read_block()  # a valid hello by chance: the server waits for requests
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False
    finally:
        await stream.close()


async def served(host: str, port: int, key_hash: bytes) -> None:
    """A well-behaved client is still served: a fresh connection, a registration, a PING."""
    conn = await FuzzConnection.open(host, port, key_hash, 3)
    try:
        await conn.ping()
    finally:
        await conn.close()
