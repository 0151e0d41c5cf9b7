"""Which subscriptions open SMP connections, and when a link ends (issue 16 defect 1), end to end: only
ACTIVE tokens' subscriptions connect; a link ends when no live subscription needs it. A made-up SMP
server is a real listener on loopback that counts the TCP connections made to it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from helpers.e2e_env import Env, active_app
from test_subscriber import status_becomes, subscribed

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import SmpServerStandIn

Kind = P.SubStatusKind


class CountingListener:
    """Accepts TCP connections, counts them and closes them at once (an SMP server that is not one)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def address(self) -> SMPServer:
        """A made-up SMP server here: a new key hash each time (each one its own server to us)."""
        return SMPServer(("127.0.0.1",), str(self.port), os.urandom(32))

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.changed.set()
        writer.close()

    async def at_least(self, n: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while self.accepted < n:
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def listeners() -> AsyncIterator[list[CountingListener]]:
    made = [CountingListener(), CountingListener()]
    for m in made:
        await m.start()
    yield made
    for m in made:
        await m.close()


async def invalid_app(env: Env, client: NtfClient) -> SimApp:
    """A token APNs calls unregistered: INVALID after its verification push (SNEW is still allowed)."""
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    env.sim.unregister(app.device_token.token.decode())
    assert isinstance(await app.register(client), P.IdTkn)
    assert env.server.push is not None
    await env.server.push.drain()
    status = await app.token_command(client, P.TChk())
    assert isinstance(status, P.Tkn) and status.status.kind is P.TokenStatusKind.INVALID
    return app


async def link_gone(env: Env, server: SMPServer, timeout_s: float = 10) -> None:
    assert env.server.pool is not None
    async with asyncio.timeout(timeout_s):
        while env.server.pool.link_state(server) is not None:  # noqa: ASYNC110 - the pool has no event per link
            await asyncio.sleep(0.02)


async def test_snews_of_an_invalid_token_open_no_connection(env: Env, listeners: list[CountingListener]) -> None:
    made_up, control = listeners
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    bad = await invalid_app(env, client)
    named = [made_up.address() for _ in range(50)]
    for server in named:  # stored and answered as before
        assert isinstance(await bad.subscribe(client, server, os.urandom(24), crypto.generate_ed25519()), P.IdSub)
    # An ACTIVE token's subscription after them does connect: once it has, the pool has seen all 50.
    good = await active_app(env, client)
    assert isinstance(await good.subscribe(client, control.address(), os.urandom(24), crypto.generate_ed25519()),
                      P.IdSub)
    await control.at_least(1)
    assert made_up.accepted == 0  # before the fix: a reconnect loop per SNEW, hundreds of connections
    assert env.server.pool is not None
    async with asyncio.timeout(15):  # a lease round may start links for the stored servers: they end unconnected
        while not all(env.server.pool.link_state(s) is None for s in named):  # noqa: ASYNC110 - polled state
            await asyncio.sleep(0.05)
    assert made_up.accepted == 0
    # A restart resubscribes only ACTIVE tokens' subscriptions: the 50 servers' links end unconnected.
    await env.restart()
    assert env.server.pool is not None
    async with asyncio.timeout(15):
        while env.server.stats["smp_links_ended"] < 50:  # noqa: ASYNC110 - counters are polled
            await asyncio.sleep(0.05)
    assert made_up.accepted == 0 and all(env.server.pool.link_state(s) is None for s in named)
    await client.close()


async def test_a_link_whose_last_subscription_is_deleted_stops_reconnecting(
        env: Env, listeners: list[CountingListener]) -> None:
    made_up, _ = listeners
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    app = await active_app(env, client)
    server = made_up.address()
    first = await app.subscribe(client, server, os.urandom(24), crypto.generate_ed25519())
    second = await app.subscribe(client, server, os.urandom(24), crypto.generate_ed25519())
    assert isinstance(first, P.IdSub) and isinstance(second, P.IdSub)
    await made_up.at_least(2)  # connecting, failing, reconnecting
    assert (await client.request(first.sub_id, P.SDel(), app.auth_key))[1] == P.Ok()
    assert env.server.pool is not None and env.server.pool.link_state(server) is not None  # one is left
    assert await app.token_command(client, P.TDel()) == P.Ok()  # deletes the last one
    await link_gone(env, server)
    assert env.server.stats["smp_links_ended"] == 1
    await client.close()


async def test_an_invalid_tokens_subscriptions_connect_once_it_is_active_again(env: Env) -> None:
    smp = SmpServerStandIn()
    await smp.start()
    try:
        client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
        app = await invalid_app(env, client)
        sub_id, _ = await subscribed(client, app, smp)
        # The app gets a working device token (TRPL), verifies it (TVFY): the stored subscription connects.
        device = P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode())
        assert await app.token_command(client, P.TRpl(device)) == P.Ok()
        push = await env.sim.next_push(device.token.decode())
        assert smp.connections == 0 and env.server.pool is not None
        async with asyncio.timeout(15):  # a lease round may have started a link for it: it ends unconnected
            while env.server.pool.link_state(smp.address) is not None:  # noqa: ASYNC110 - polled state
                await asyncio.sleep(0.05)
        assert smp.connections == 0
        assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
        await status_becomes(client, app, sub_id, Kind.ACTIVE)
        assert smp.connections == 1
        await client.close()
    finally:
        await smp.close()


async def test_a_connected_link_ends_with_its_last_subscription(env: Env) -> None:
    smp = SmpServerStandIn()
    await smp.start()
    try:
        client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
        app = await active_app(env, client)
        sub_id, _ = await subscribed(client, app, smp)
        await status_becomes(client, app, sub_id, Kind.ACTIVE)
        assert smp.connections == 1
        assert (await client.request(sub_id, P.SDel(), app.auth_key))[1] == P.Ok()
        await link_gone(env, smp.address)
        async with asyncio.timeout(10):
            while smp.connections:  # noqa: ASYNC110 - the stand-in has no event for a closed connection
                await asyncio.sleep(0.02)
        assert env.server.stats["smp_links_ended"] == 1 and env.server.stats["smp_disconnected"] == 0
        await client.close()
    finally:
        await smp.close()
