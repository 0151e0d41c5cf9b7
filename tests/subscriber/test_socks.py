"""SOCKS5 for SMP connections: the host-selection table (pure) and real SMP connections through the strict
SOCKS5 stand-in to the SMP stand-in, with made-up .onion names only the proxy can resolve."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator

import pytest

from ntf_server.config import SocksMode, SubscriberConfig
from ntf_server.protocol import crypto, smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_session import NotifierQueue
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.sim.socks5 import ATYP_DOMAIN, REP_HOST_UNREACHABLE, REP_OK, Socks5StandIn
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.hosts import Route, Via, is_onion, plan_routes
from ntf_server.subscriber.link_errors import ConnectFailed
from ntf_server.subscriber.routing import client_factory
from ntf_server.subscriber.socks import SocksCredentials, SocksIsolation, socks_opener

WAIT_S = 10.0
PUB1, PUB2, IP = "smp1.example.com", "smp2.example.com", "192.0.2.7"
ONION1, ONION2 = "a" * 56 + ".onion", "b" * 16 + ".onion"
D, P, N = Via.DIRECT, Via.PROXY, Via.NO_ROUTE


def fake_onion() -> str:
    """A well-formed v3 onion name that no resolver on this machine knows."""
    return base64.b32encode(os.urandom(35)).decode().lower()[:56] + ".onion"


# ---------------------------------------------------------------- host selection (pure)


@pytest.mark.parametrize(
    ("hosts", "proxy", "mode", "expected"),
    [
        # no proxy: public direct in address order; .onion unreachable, last (any mode)
        ((PUB1, ONION1), False, SocksMode.ONION, ((PUB1, D), (ONION1, N))),
        ((ONION1, PUB1, PUB2), False, SocksMode.ALWAYS, ((PUB1, D), (PUB2, D), (ONION1, N))),
        ((ONION1,), False, SocksMode.ONION, ((ONION1, N),)),
        ((IP,), False, SocksMode.ONION, ((IP, D),)),
        # onion mode: public direct first, then .onion through the proxy
        ((ONION1, PUB1), True, SocksMode.ONION, ((PUB1, D), (ONION1, P))),
        ((PUB1, ONION1, IP, ONION2), True, SocksMode.ONION, ((PUB1, D), (IP, D), (ONION1, P), (ONION2, P))),
        ((ONION2,), True, SocksMode.ONION, ((ONION2, P),)),
        ((PUB1,), True, SocksMode.ONION, ((PUB1, D),)),
        # always: everything through the proxy, .onion first
        ((PUB1, ONION1), True, SocksMode.ALWAYS, ((ONION1, P), (PUB1, P))),
        ((PUB1, IP), True, SocksMode.ALWAYS, ((PUB1, P), (IP, P))),
        ((ONION1, ONION2), True, SocksMode.ALWAYS, ((ONION1, P), (ONION2, P))),
    ],
)
def test_host_selection_table(hosts: tuple[str, ...], proxy: bool, mode: SocksMode,
                              expected: tuple[tuple[str, Via], ...]) -> None:
    assert plan_routes(hosts, proxy=proxy, mode=mode) == tuple(Route(h, v) for h, v in expected)


def test_every_host_is_planned_once_in_every_case() -> None:
    hosts = (ONION1, PUB1, IP, ONION2, PUB2)
    for proxy in (False, True):
        for mode in SocksMode:
            routes = plan_routes(hosts, proxy=proxy, mode=mode)
            assert sorted(r.host for r in routes) == sorted(hosts)
            assert all((r.via is Via.NO_ROUTE) == (not proxy and is_onion(r.host)) for r in routes)


def test_onion_suffix_is_recognised_case_insensitively() -> None:
    assert is_onion("ABC.ONION") and is_onion(ONION1) and not is_onion("onion.example.com")


# ---------------------------------------------------------------- credentials (pure)


def server(hosts: tuple[str, ...], port: int = 5223, key_hash: bytes = b"k" * 32) -> SMPServer:
    return SMPServer(hosts, str(port), key_hash)


def test_credentials_are_per_server_stable_and_keyed() -> None:
    iso = SocksIsolation(b"x" * 32)
    a, b = server((PUB1, ONION1)), server((PUB2,))
    assert iso.credentials(a) == iso.credentials(server((PUB1, ONION1)))  # same server: same circuit tag
    assert iso.credentials(a) != iso.credentials(b)
    assert iso.credentials(a) != iso.credentials(server((PUB1, ONION1), key_hash=b"j" * 32))
    assert iso.credentials(a) != SocksIsolation(b"y" * 32).credentials(a)  # keyed: another process differs
    assert SocksIsolation().credentials(a) != SocksIsolation().credentials(a)  # random key per process
    creds = iso.credentials(a)
    for field in (creds.username, creds.password):
        assert field.isascii() and 1 <= len(field) <= 255
        assert "example" not in field and "onion" not in field and "aaaa" not in field  # no address in clear


def test_isolation_key_too_short() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SocksIsolation(b"short")


# ---------------------------------------------------------------- through the SOCKS5 stand-in


@pytest.fixture
async def smp() -> AsyncIterator[SmpServerStandIn]:
    async with SmpServerStandIn() as s:
        yield s


@pytest.fixture
async def proxy() -> AsyncIterator[Socks5StandIn]:
    async with Socks5StandIn() as p:
        yield p


@pytest.fixture
async def clients() -> AsyncIterator[list[SmpClient]]:
    made: list[SmpClient] = []
    yield made
    for c in made:
        await c.close()


class NoDirect:
    """A direct opener that must not be used (and fails if it is), recording the hosts asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> socket.socket:
        self.asked.append(host)
        raise ConnectionRefusedError(f"direct connection to {host} not allowed in this test")


def settings(p: Socks5StandIn | None, mode: SocksMode = SocksMode.ONION) -> SubscriberConfig:
    return SubscriberConfig(socks_proxy=f"127.0.0.1:{p.port}" if p else "", socks_mode=mode,
                            allow_private_hosts=True)  # the SMP stand-ins listen on loopback


async def start(clients: list[SmpClient], client: SmpClient) -> SmpClient:
    clients.append(client)
    await client.start()
    return client


async def subscribed(client: SmpClient, smp: SmpServerStandIn) -> None:
    """One NSUB answered over this connection: the SMP session really runs through the proxy."""
    key = crypto.generate_ed25519()
    creds, _ = smp.create_queue(crypto.public_of(key))
    client.subscribe([NotifierQueue(creds.notifier_id, key)])
    async with asyncio.timeout(WAIT_S):
        assert await client.events().get() == [E.Subscribed(creds.notifier_id)]


async def test_onion_host_through_the_proxy_resolved_by_the_proxy(smp: SmpServerStandIn, proxy: Socks5StandIn,
                                                                  clients: list[SmpClient]) -> None:
    onion = fake_onion()
    proxy.names[onion] = "127.0.0.1"
    address = SMPServer((onion,), str(smp.port), smp.key_hash)
    iso, direct = SocksIsolation(), NoDirect()
    client = await start(clients, client_factory(settings(proxy), isolation=iso, direct=direct)(address))
    await subscribed(client, smp)
    assert client.host == onion and direct.asked == []
    [req] = proxy.requests
    assert (req.atyp, req.host, req.port, req.reply) == (ATYP_DOMAIN, onion, smp.port, REP_OK)  # the name, sent
    assert SocksCredentials(req.username, req.password) == iso.credentials(address)


async def test_two_servers_get_different_credentials_and_a_reconnect_the_same(
        proxy: Socks5StandIn, clients: list[SmpClient]) -> None:
    onions = [fake_onion(), fake_onion()]
    async with SmpServerStandIn() as smp1, SmpServerStandIn() as smp2:
        addresses = [SMPServer((o,), str(s.port), s.key_hash) for o, s in zip(onions, (smp1, smp2), strict=True)]
        for o in onions:
            proxy.names[o] = "127.0.0.1"
        make = client_factory(settings(proxy), direct=NoDirect())
        first = await start(clients, make(addresses[0]))
        await start(clients, make(addresses[1]))
        await first.close()
        await start(clients, make(addresses[0]))  # a reconnect: the pool makes a new client
        await subscribed(clients[-1], smp1)
        for c in clients:
            await c.close()
    creds = [(r.host, r.username, r.password) for r in proxy.requests]
    assert [h for h, _, _ in creds] == [onions[0], onions[1], onions[0]]
    assert creds[0][1:] != creds[1][1:]  # each server on its own circuit
    assert creds[0][1:] == creds[2][1:]  # the same server keeps its credentials across reconnects


async def test_onion_mode_public_host_direct_then_onion_fallback_through_the_proxy(
        smp: SmpServerStandIn, proxy: Socks5StandIn, clients: list[SmpClient]) -> None:
    onion = fake_onion()
    proxy.names[onion] = "127.0.0.1"
    # 127.0.0.2 is loopback, but the stand-in listens on 127.0.0.1 only: the public host refuses
    address = SMPServer(("127.0.0.2", onion), str(smp.port), smp.key_hash)
    client = await start(clients, client_factory(settings(proxy))(address))
    await subscribed(client, smp)
    assert client.host == onion
    assert [r.host for r in proxy.requests] == [onion]  # the public host was not asked of the proxy


async def test_onion_mode_public_host_connects_directly(smp: SmpServerStandIn, proxy: Socks5StandIn,
                                                        clients: list[SmpClient]) -> None:
    address = SMPServer(("127.0.0.1", fake_onion()), str(smp.port), smp.key_hash)
    client = await start(clients, client_factory(settings(proxy))(address))
    await subscribed(client, smp)
    assert client.host == "127.0.0.1" and proxy.requests == []


async def test_always_mode_sends_every_host_through_the_proxy_onion_first(
        smp: SmpServerStandIn, proxy: Socks5StandIn, clients: list[SmpClient]) -> None:
    unknown_onion = fake_onion()  # the proxy cannot reach it: host unreachable, next host
    address = SMPServer(("localhost", unknown_onion), str(smp.port), smp.key_hash)
    direct = NoDirect()
    client = await start(clients, client_factory(settings(proxy, SocksMode.ALWAYS), direct=direct)(address))
    await subscribed(client, smp)
    assert client.host == "localhost" and direct.asked == []
    assert [(r.host, r.atyp, r.reply) for r in proxy.requests] == [
        (unknown_onion, ATYP_DOMAIN, REP_HOST_UNREACHABLE), ("localhost", ATYP_DOMAIN, REP_OK)]
    assert len({(r.username, r.password) for r in proxy.requests}) == 1  # hosts of one server: one tag


async def test_onion_only_server_without_a_proxy_says_why(smp: SmpServerStandIn) -> None:
    address = SMPServer((fake_onion(),), str(smp.port), smp.key_hash)
    client = client_factory(settings(None), direct=NoDirect())(address)
    with pytest.raises(ConnectFailed, match=r"needs subscriber\.socks_proxy"):
        await client.start()


async def test_proxy_down_is_a_connect_failure_naming_the_proxy(smp: SmpServerStandIn) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = SMPServer((fake_onion(),), str(smp.port), smp.key_hash)
    client = client_factory(SubscriberConfig(socks_proxy=f"127.0.0.1:{port}"))(address)
    with pytest.raises(ConnectFailed, match=rf"SOCKS5 proxy 127\.0\.0\.1:{port} unreachable"):
        await client.start()


async def test_stand_in_refuses_clients_without_credentials(proxy: Socks5StandIn) -> None:
    # python-socks offers only "no authentication" without credentials: a strict proxy must refuse
    opener = socks_opener("127.0.0.1", proxy.port, SocksCredentials("", ""))
    with pytest.raises(ConnectionError, match="SOCKS5 proxy"):
        await opener("localhost", 1)
    assert proxy.requests == [] and proxy.refused == 1


async def test_a_name_resolving_to_a_private_address_is_not_connected_to(smp: SmpServerStandIn) -> None:
    """``allow_private_hosts`` off (the default): a host name that resolves into a private network is
    refused at connect, before any packet is sent to it (issue 16.1)."""
    address = SMPServer(("localhost",), str(smp.port), smp.key_hash)
    client = client_factory(SubscriberConfig())(address)
    with pytest.raises(ConnectFailed, match="resolves only to private addresses"):
        await client.start()
    assert smp.connections == 0
