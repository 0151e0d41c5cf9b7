"""Connection limits over loopback (issue 8.3): sockets count toward the caps from accept, whatever their
phase; the handshake and per-address caps refuse beyond their limits while others are served; deadlines
drop sockets that never finish TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

import pytest
from conftest import Env

from ntf_server.config import ServerConfig
from ntf_server.protocol import ntf as P
from ntf_server.protocol.framing import NTF_BLOCK_SIZE
from ntf_server.sim.device import NtfClient
from ntf_server.transport.blocks import BlockStream, ConnectionClosed
from ntf_server.transport.tls import connect_pinned, ntf_client_context

REFUSED = (ConnectionClosed, ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError)


def client_hello() -> bytes:
    """A real TLS ClientHello: the server does its half of the handshake and then waits for ours."""
    obj = ntf_client_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


class Raw:
    """A TCP socket that never finishes TLS: silent, or sends a ClientHello and then nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, env: Env, *, hello: bool = True, local_host: str | None = None) -> Raw:
        local = (local_host, 0) if local_host else None
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=local)
        if hello:
            writer.write(client_hello())
            await writer.drain()
        return cls(reader, writer)

    async def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        """True when the server closes the socket (EOF or reset) within the time; the server's TLS flight
        is read and dropped."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def connect(env: Env, local_host: str | None = None) -> NtfClient:
    other = {"local_host": local_host} if local_host else {}
    return await NtfClient.connect("127.0.0.1", env.port, env.key_hash, timeout_s=5, **other)


async def tls_only(env: Env) -> BlockStream:
    """TLS done, NTF handshake not: the server hello is read and the client hello never sent."""
    reader, writer, _ = await connect_pinned("127.0.0.1", env.port, ntf_client_context(), env.key_hash, timeout_s=5)
    stream = BlockStream(reader, writer, NTF_BLOCK_SIZE, read_timeout_s=5, write_timeout_s=5)
    await stream.read_block()
    return stream


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll server state the test cannot be told about (counters move in the server's own callbacks)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def pong(client: NtfClient) -> bool:
    return (await client.request(b"", P.Ping()))[1] == P.Pong()


async def test_sockets_in_tls_count_toward_the_connection_cap(env: Env) -> None:
    server = await env.reconfigure("server", max_connections=4)
    bystander = await connect(env)
    flood = [await Raw.open(env, hello=i % 2 == 0) for i in range(3)]  # silent and mid-handshake sockets
    await until(lambda: server.stats["conn_accepted"] == 4)
    with pytest.raises(REFUSED):
        await connect(env)
    assert server.stats["conn_refused"] == 1
    assert await pong(bystander)
    for raw in flood:
        assert not await raw.closed_by_server(timeout_s=0.1)  # held, not dropped
        await raw.close()
    await until(lambda: server.listener is not None and server.listener.connections == 1)
    late = await connect(env)  # the slots are free again
    assert await pong(late)
    for c in (bystander, late):
        await c.close()


async def test_handshake_cap_refuses_beyond_it_while_a_bystander_is_served(env: Env) -> None:
    server = await env.reconfigure("server", max_handshakes=3)
    bystander = await connect(env)  # handshakes done: holds no handshake slot
    stuck = [await Raw.open(env), await Raw.open(env, hello=False)]
    ntf_stuck = await tls_only(env)  # TLS done, still in the NTF handshake
    await until(lambda: server.stats["conn_accepted"] == 4)
    extra = await Raw.open(env)
    assert await extra.closed_by_server()
    assert server.stats["conn_refused_handshakes"] == 1
    assert await pong(bystander)
    await ntf_stuck.close()
    await until(lambda: server.listener is not None and server.listener.handshakes == 2)
    late = await connect(env)  # a freed handshake slot is usable
    assert await pong(late)
    for raw in [*stuck, extra]:
        await raw.close()
    for c in (bystander, late):
        await c.close()


async def test_per_ip_cap_refuses_beyond_it_while_other_addresses_are_served(env: Env) -> None:
    server = await env.reconfigure("server", max_connections_per_ip=3)
    own = await connect(env)
    flood = [await Raw.open(env), await Raw.open(env, hello=False)]
    await until(lambda: server.stats["conn_accepted"] == 3)
    extra = await Raw.open(env)
    assert await extra.closed_by_server()
    with pytest.raises(REFUSED):
        await connect(env)
    assert server.stats["conn_refused_per_ip"] == 2
    other = await connect(env, local_host="127.0.0.2")  # another client address is not affected
    assert await pong(other) and await pong(own)
    for raw in [*flood, extra]:
        await raw.close()
    for c in (own, other):
        await c.close()


async def test_sockets_that_never_finish_tls_are_dropped_at_the_deadline(env: Env) -> None:
    server = await env.reconfigure("server", tls_timeout_s=0.5)
    silent, mid = await Raw.open(env, hello=False), await Raw.open(env)
    assert await silent.closed_by_server() and await mid.closed_by_server()
    await until(lambda: server.stats["conn_tls_failed"] == 2)
    for raw in (silent, mid):
        await raw.close()
    client = await connect(env)
    assert await pong(client)
    await client.close()


async def test_garbage_instead_of_tls_is_dropped_and_others_are_served(env: Env) -> None:
    bystander = await connect(env)
    raw = await Raw.open(env, hello=False)
    raw.writer.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(600))
    assert await raw.closed_by_server()
    await until(lambda: env.server.stats["conn_tls_failed"] == 1)
    assert await pong(bystander)
    await raw.close()
    await bystander.close()


def test_idle_connections_are_closed_by_default(env: Env) -> None:
    """What `ntf-server init` writes closes silent connections after 10 minutes (the app reconnects on its
    next command); the closing itself is test_idle_clients_are_disconnected's, at a shorter value."""
    assert env.config.server.idle_timeout_s == ServerConfig().idle_timeout_s == 600.0


async def test_per_ip_handshake_cap_refuses_beyond_it_while_other_addresses_are_served(env: Env) -> None:
    """Issue 16.3: one address may hold only max_handshakes_per_ip of the max_handshakes slots."""
    server = await env.reconfigure("server", max_handshakes_per_ip=2)
    own = await connect(env)  # through its handshakes: holds no handshake slot
    stuck = [await Raw.open(env), await Raw.open(env, hello=False)]
    await until(lambda: server.stats["conn_accepted"] == 3)
    extra = await Raw.open(env)
    assert await extra.closed_by_server()
    assert server.stats["conn_refused_handshakes_per_ip"] == 1
    other = await connect(env, local_host="127.0.0.2")  # another address has its own slots
    assert await pong(other) and await pong(own)
    await stuck[0].close()
    await until(lambda: server.listener is not None and server.listener.handshakes == 1)
    late = await connect(env)  # a freed slot of this address is usable
    assert await pong(late)
    for raw in [*stuck, extra]:
        await raw.close()
    for c in (own, other, late):
        await c.close()


async def test_a_silent_socket_is_dropped_at_the_first_byte_deadline(env: Env) -> None:
    """Issue 16.3: a socket that sends nothing held a handshake slot for the whole TLS deadline (60 s)."""
    server = await env.reconfigure("server", first_byte_timeout_s=0.3)
    silent, mid = await Raw.open(env, hello=False), await Raw.open(env)
    assert await silent.closed_by_server(timeout_s=5)
    assert not await mid.closed_by_server(timeout_s=0.5)  # started TLS: the TLS deadline applies
    await until(lambda: server.stats["conn_tls_failed"] == 1)
    for raw in (silent, mid):
        await raw.close()
    client = await connect(env)
    assert await pong(client)
    await client.close()
