"""One SMP connection (subscriber/client.py) over loopback TLS against the strict SMP stand-in."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from manual_time import ManualTime

from ntf_server.protocol import crypto, smp as S, smp_events as E
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.protocol.error_types import AUTH
from ntf_server.protocol.framing import SMP_CLIENT_VRANGE
from ntf_server.protocol.smp_session import NotifierQueue
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.connect import AddrInfo, open_tcp
from ntf_server.subscriber.link_errors import (
    ConnectFailed,
    ConnectionLost,
    HandshakeFailed,
    ProtocolError,
    ServiceRefused,
)
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.liveness import Timeouts
from ntf_server.transport import tls
from ntf_server.transport.certs import new_service_credentials

WAIT_S = 10.0
ServerFactory = Callable[..., Awaitable[SmpServerStandIn]]


@pytest.fixture
async def clients() -> AsyncIterator[list[SmpClient]]:
    made: list[SmpClient] = []
    yield made
    for c in made:
        await c.close()


async def connect(clients: list[SmpClient], server: SmpServerStandIn | SMPServer, **kw: object) -> SmpClient:
    address = server.address if isinstance(server, SmpServerStandIn) else server
    client = SmpClient(address, **kw)  # type: ignore[arg-type]
    clients.append(client)
    await client.start()
    return client


def new_queue(server: SmpServerStandIn, key: crypto.PrivateAuthKey | None = None
              ) -> tuple[NotifierQueue, QueueCredentials]:
    key = key or crypto.generate_ed25519()
    creds, _ = server.create_queue(crypto.public_of(key))
    return NotifierQueue(creds.notifier_id, key), creds


_leftover: dict[int, list[E.SmpEvent]] = {}


async def take(client: SmpClient, n: int, timeout_s: float = WAIT_S) -> list[E.SmpEvent]:
    """The next ``n`` events, whatever batches they come in (the rest is kept for the next call)."""
    out = _leftover.pop(id(client), [])
    async with asyncio.timeout(timeout_s):
        while len(out) < n:
            out += await client.events().get()
    out, _leftover[id(client)] = out[:n], out[n:]
    return out


async def waiting(client: SmpClient) -> list[E.SmpEvent]:
    """Every event reported so far and not taken yet."""
    out = _leftover.pop(id(client), [])
    while len(client.events()):
        out += await client.events().get()
    return out


# ---------------------------------------------------------------- subscribing, events


@pytest.mark.parametrize("version", SMP_CLIENT_VRANGE.all())
async def test_subscribe_many_queues_at_each_version(make_server: ServerFactory, clients: list[SmpClient],
                                                     version: int) -> None:
    server = await make_server(max_version=version)
    client = await connect(clients, server)
    assert client.version == version and client.state is LinkState.UP
    assert client.subscribe([]) == 0
    queues = [new_queue(server)[0] for _ in range(300)]
    blocks = client.subscribe(queues)
    assert 2 <= blocks <= 4  # many NSUBs per 16 KB block (~130), not one each
    events = await take(client, 300)
    assert sorted(events, key=repr) == sorted((E.Subscribed(q.notifier_id) for q in queues), key=repr)
    assert sorted(server.subscribed_queues()) == sorted(q.notifier_id for q in queues)
    await asyncio.wait_for(client.flushed(), WAIT_S)
    assert client.awaiting == 0 and client.outbox_blocks == 0 and client.counters.blocks_sent == blocks
    assert len(client.queues(E.QueueState.ACTIVE)) == 300


async def test_wrong_key_and_unknown_queue_fail_with_auth(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    client = await connect(clients, server)
    q, _ = new_queue(server)
    wrong = NotifierQueue(q.notifier_id, crypto.generate_ed25519())
    unknown = NotifierQueue(os.urandom(24), crypto.generate_ed25519())
    client.subscribe([wrong, unknown])
    assert await take(client, 2) == [E.SubscriptionFailed(wrong.notifier_id, E.FailureKind.AUTH, AUTH),
                                     E.SubscriptionFailed(unknown.notifier_id, E.FailureKind.AUTH, AUTH)]
    assert server.subscriber_of(q.notifier_id) is None
    assert client.state is LinkState.UP  # an ERR answer is not a connection problem


async def test_nmsg_events_carry_the_encrypted_metadata(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    q, creds = new_queue(server)
    server.notify(q.notifier_id, b"kept", 1700000001)  # retained while nobody is subscribed
    client = await connect(clients, server)
    client.subscribe([q])
    assert (await take(client, 1)) == [E.Subscribed(q.notifier_id)]
    server.notify(q.notifier_id, b"live", 1700000002)
    msgs = await take(client, 2)
    metas = []
    for m in msgs:
        assert isinstance(m, E.Message) and m.state is E.QueueState.ACTIVE
        metas.append(S.decrypt_nmsg_meta(creds.rcv_ntf_dh_secret, m.nonce, m.enc_meta))
    assert metas == [S.NMsgMeta(b"kept", 1700000001), S.NMsgMeta(b"live", 1700000002)]


async def test_end_when_another_connection_subscribes(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    first, second = await connect(clients, server), await connect(clients, server)
    q, _ = new_queue(server)
    first.subscribe([q])
    assert await take(first, 1) == [E.Subscribed(q.notifier_id)]
    second.subscribe([q])
    assert await take(second, 1) == [E.Subscribed(q.notifier_id)]
    assert await take(first, 1) == [E.Ended(q.notifier_id)]
    assert first.queue_state(q.notifier_id) is E.QueueState.ENDED and first.state is LinkState.UP


@pytest.mark.parametrize(("version", "expected"), [(18, E.Deleted), (10, E.Deleted), (7, E.Ended)])
async def test_deleted_queue(make_server: ServerFactory, clients: list[SmpClient], version: int,
                             expected: type[E.Deleted | E.Ended]) -> None:
    server = await make_server(max_version=version)
    client = await connect(clients, server)
    q, _ = new_queue(server)
    client.subscribe([q])
    await take(client, 1)
    server.delete_queue(q.notifier_id)
    assert await take(client, 1) == [expected(q.notifier_id)]  # END before v10 (spec §3.2)


async def test_forgotten_queue_messages_arrive_without_state(make_server: ServerFactory,
                                                            clients: list[SmpClient]) -> None:
    server = await make_server()
    client = await connect(clients, server)
    q, _ = new_queue(server)
    client.subscribe([q])
    await take(client, 1)
    client.forget(q.notifier_id)
    server.notify(q.notifier_id, b"after SDEL", 1700000003)
    [m] = await take(client, 1)
    assert isinstance(m, E.Message) and m.state is None


# ---------------------------------------------------------------- timers (manual time: nothing sleeps)


async def test_ping_after_the_idle_interval_and_pong(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    t = ManualTime()
    client = await connect(clients, server, clock=t.clock, sleep=t.sleep, timeouts=Timeouts(ping_idle_s=60))
    q, _ = new_queue(server)
    client.subscribe([q])
    await take(client, 1)
    await t.advance(59)
    assert client.counters.pings_sent == 0
    await t.advance(1)
    assert client.counters.pings_sent == 1
    assert await take(client, 1) == [E.Pong()]
    await t.advance(59)  # the PONG was traffic: the next PING is 60 s after it
    assert client.counters.pings_sent == 1
    await t.advance(1)
    assert client.counters.pings_sent == 2 and await take(client, 1) == [E.Pong()]
    assert client.counters.timeouts == 0


async def test_stalled_server_times_out_then_the_connection_is_dropped(make_server: ServerFactory,
                                                                     clients: list[SmpClient]) -> None:
    server = await make_server()
    t = ManualTime()
    timeouts = Timeouts(response_s=30, ping_idle_s=60, drop_after_timeouts=3, drop_after_silence_s=180)
    client = await connect(clients, server, clock=t.clock, sleep=t.sleep, timeouts=timeouts)
    queues = [new_queue(server)[0] for _ in range(2)]
    server.stall()
    client.subscribe(queues)
    await client.flushed()  # the response timeout counts from here, when the block was written
    await t.advance(29)
    assert client.awaiting == 2 and len(client.events()) == 0
    await t.advance(1)
    assert await take(client, 2) == [E.SubscriptionTimedOut(q.notifier_id) for q in queues]
    assert sorted(client.queues(E.QueueState.PENDING)) == sorted(q.notifier_id for q in queues)  # kept
    await t.advance(90)  # re-sent (and timed out again) with backoff; PING at 60 s of silence, unanswered
    assert client.state is LinkState.UP and client.counters.nsubs_resent >= 4  # only 90 s silent
    assert E.PingTimedOut() in await waiting(client)
    await t.advance(90)  # 180 s of silence
    error = await asyncio.wait_for(client.wait_closed(), WAIT_S)
    assert isinstance(error, ConnectionLost) and "timed out" in str(error)
    assert client.state is LinkState.DOWN


# ---------------------------------------------------------------- the connection ends


async def test_server_drops_the_connection(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    client = await connect(clients, server)
    q, _ = new_queue(server)
    client.subscribe([q])
    await take(client, 1)
    server.drop_connections()
    error = await asyncio.wait_for(client.wait_closed(), WAIT_S)
    assert isinstance(error, ConnectionLost)
    assert [b async for b in client.events()] == []  # the stream ends
    assert client.queues(E.QueueState.ACTIVE, E.QueueState.PENDING) == [q.notifier_id]  # → INACTIVE, resubscribe
    with pytest.raises(ConnectionLost):
        client.subscribe([q])


@pytest.mark.parametrize("version", [11, 18, 20])
async def test_garbage_from_the_server_is_a_protocol_error(make_server: ServerFactory, clients: list[SmpClient],
                                                           version: int) -> None:
    server = await make_server(max_version=version)
    client = await connect(clients, server)
    other = await connect(clients, server)
    await server.wait_connections(2)
    await server.send_garbage()
    error = await asyncio.wait_for(client.wait_closed(), WAIT_S)
    assert isinstance(error, ProtocolError)
    assert isinstance(await asyncio.wait_for(other.wait_closed(), WAIT_S), ProtocolError)


async def test_close_by_us(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    client = await connect(clients, server)
    await client.close()
    assert await client.wait_closed() is None and client.closed
    await client.close()  # idempotent


# ---------------------------------------------------------------- connecting


async def test_close_while_connecting(make_server: ServerFactory) -> None:
    server = await make_server()
    server.stall()  # the stand-in does not send its hello: the client waits in the handshake
    client = SmpClient(server.address)
    starting = asyncio.create_task(client.start())
    await asyncio.sleep(0.2)
    assert client.state is LinkState.CONNECTING
    await client.close()
    with pytest.raises(ConnectionLost, match="closed while connecting"):
        await asyncio.wait_for(starting, WAIT_S)
    assert client.closed and client.close_error is None and client.state is LinkState.DOWN


async def test_cancelled_start_leaves_the_client_closed(make_server: ServerFactory) -> None:
    server = await make_server()
    server.stall()
    client = SmpClient(server.address)
    starting = asyncio.create_task(client.start())
    await asyncio.sleep(0.2)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert client.closed and isinstance(client.close_error, ConnectionLost)


async def test_refused_handshake(make_server: ServerFactory) -> None:
    server = await make_server()
    server.refuse_handshakes = True
    client = SmpClient(server.address)
    with pytest.raises(HandshakeFailed):
        await client.start()
    assert client.closed and isinstance(client.close_error, HandshakeFailed)


class _Ended(logging.Handler):
    """Collects the stand-in's "connection ended" lines and signals the first."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "connection ended" in record.getMessage():
            self.lines.append(record.getMessage())
            self.seen.set()


async def test_wrong_fingerprint_fails_before_anything_is_sent(make_server: ServerFactory) -> None:
    server = await make_server()
    wrong = SMPServer(server.address.hosts, server.address.port, bytes(32))
    client = SmpClient(wrong)
    stand_in_log, ended = logging.getLogger("ntf_server.sim.smp_server"), _Ended()
    level = stand_in_log.level
    stand_in_log.setLevel(logging.DEBUG)
    stand_in_log.addHandler(ended)
    try:
        with pytest.raises(HandshakeFailed, match="not the pinned server"):
            await client.start()
        await asyncio.wait_for(ended.seen.wait(), WAIT_S)
    finally:
        stand_in_log.removeHandler(ended)
        stand_in_log.setLevel(level)
    # The stand-in saw the connection end while it waited for our hello: no hello (and so no key hash) was sent.
    [line] = ended.lines
    assert "EOF" in line and "identity" not in line
    assert server.connections == 0 and client.closed


async def test_server_without_a_common_version(make_server: ServerFactory) -> None:
    server = await make_server(max_version=6)
    with pytest.raises(HandshakeFailed, match="v6"):
        await SmpClient(server.address).start()


async def test_hosts_are_tried_in_order(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    hosts = ("127.0.0.3", "127.0.0.1")  # nothing listens on the first
    client = await connect(clients, SMPServer(hosts, server.address.port, server.key_hash))
    assert client.host == "127.0.0.1"
    with pytest.raises(ConnectFailed, match=r"127\.0\.0\.3"):
        await SmpClient(SMPServer(hosts[:1], server.address.port, server.key_hash)).start()


async def test_onion_hosts_skipped_without_a_proxy_opener(make_server: ServerFactory,
                                                          clients: list[SmpClient]) -> None:
    server = await make_server()
    onion = "a" * 56 + ".onion"
    client = await connect(clients, SMPServer((onion, "127.0.0.1"), server.address.port, server.key_hash))
    assert client.hosts == ("127.0.0.1",)


async def test_restarted_on_a_new_port_reached_by_name(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    q, _ = new_queue(server)
    first = await connect(clients, SMPServer(("localhost",), str(server.port), server.key_hash))
    first.subscribe([q])
    await take(first, 1)
    old_port = server.port
    await server.close()
    await server.start(port=0)
    assert server.port != old_port
    assert isinstance(await asyncio.wait_for(first.wait_closed(), WAIT_S), ConnectionLost)
    second = await connect(clients, SMPServer(("localhost",), str(server.port), server.key_hash))
    assert first.queues(E.QueueState.ACTIVE) == [q.notifier_id]  # what the pool resubscribes
    second.subscribe([q])
    assert await take(second, 1) == [E.Subscribed(q.notifier_id)]


async def test_name_resolved_again_on_every_connect(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    """An SMP server that moves to a new IP under the same name is reached on the next connect."""
    server = await make_server()
    names = {"smp.example": "127.0.0.1"}
    asked: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[AddrInfo]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.3", port)),  # refused: the next is tried
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]

    opener = functools.partial(open_tcp, resolve=resolve)
    address = SMPServer(("smp.example",), str(server.port), server.key_hash)
    await connect(clients, address, opener=opener)
    await server.close()
    server.host = "127.0.0.2"
    await server.start(port=server.port)
    names["smp.example"] = "127.0.0.2"
    client = await connect(clients, address, opener=opener)
    assert client.state is LinkState.UP and asked == ["smp.example", "smp.example"]


# ---------------------------------------------------------------- back-pressure


async def test_slow_consumer_stops_reading_and_nothing_is_lost(make_server: ServerFactory,
                                                               clients: list[SmpClient]) -> None:
    server = await make_server()
    t = ManualTime()
    client = await connect(clients, server, event_batches_max=2, clock=t.clock, sleep=t.sleep)
    q, creds = new_queue(server)
    client.subscribe([q])
    assert await take(client, 1) == [E.Subscribed(q.notifier_id)]
    sent = 0

    def notify() -> None:
        nonlocal sent
        server.notify(q.notifier_id, b"m%03d" % sent, 1700000000 + sent)
        sent += 1

    async with asyncio.timeout(WAIT_S):
        while not client.reading_paused:  # one NMSG at a time, so the stand-in sends them in separate blocks
            notify()
            await asyncio.sleep(0.01)
    received = client.counters.blocks_received
    assert received == 1 + 2 + 1  # the OK, two batches waiting, one in the reader's hands
    for _ in range(20):
        notify()
        await asyncio.sleep(0.01)
    assert client.counters.blocks_received == received  # nothing more is read while the pool does not take events
    assert "reading paused" in repr(client)
    await t.advance(600)  # while reading waits for the pool, silence is not the server's: no PING, no timeout
    assert client.counters.pings_sent == 0 and client.state is LinkState.UP
    metas = []
    async with asyncio.timeout(WAIT_S):
        while len(metas) < sent:
            for m in await client.events().get():
                assert isinstance(m, E.Message)
                metas.append(S.decrypt_nmsg_meta(creds.rcv_ntf_dh_secret, m.nonce, m.enc_meta).msg_id)
    assert metas == [b"m%03d" % i for i in range(sent)]  # all of them, in order
    assert client.counters.blocks_received > received and client.counters.paused_s == 600.0
    assert not client.reading_paused


async def test_a_consumer_that_fell_behind_takes_every_waiting_block_at_once(make_server: ServerFactory,
                                                                           clients: list[SmpClient]) -> None:
    """The pool spends a store round trip per batch it takes: when several blocks wait (an SMP server sends
    one NMSG per block when it is not busy), it gets all of them in one batch, in order, and so catches
    up instead of staying seconds behind (tests/bench/nmsg_pipeline.py)."""
    server = await make_server()
    client = await connect(clients, server)
    q, creds = new_queue(server)
    client.subscribe([q])
    assert await take(client, 1) == [E.Subscribed(q.notifier_id)]
    async with asyncio.timeout(WAIT_S):
        for i in range(5):  # one at a time, so that each NMSG comes in a block of its own
            server.notify(q.notifier_id, b"m%d" % i, 1700000000)
            while len(client.events()) < i + 1:  # noqa: ASYNC110 - polls what the reader task has put
                await asyncio.sleep(0.005)
    assert client.counters.blocks_received == 1 + 5
    batch = await client.events().get()
    assert [S.decrypt_nmsg_meta(creds.rcv_ntf_dh_secret, m.nonce, m.enc_meta).msg_id
            for m in batch if isinstance(m, E.Message)] == [b"m%d" % i for i in range(5)]
    assert len(client.events()) == 0


async def test_repr_shows_state_not_ids(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    client = await connect(clients, server)
    q, _ = new_queue(server)
    client.subscribe([q])
    await take(client, 1)
    text = repr(client)
    assert "up" in text and "v20" in text and "1 active" in text
    for form in (q.notifier_id.hex(), repr(q.notifier_id), b64u_encode(q.notifier_id)):
        assert form not in text


# ---------------------------------------------------------------- services (SMP v16+)


async def test_a_service_session_over_tls(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    creds = new_service_credentials()
    first = SmpClient(server.address)
    first.service = creds
    clients.append(first)
    await first.start()
    sid = first.service_id
    assert sid is not None
    q, _ = new_queue(server)
    first.subscribe([q])
    assert await take(first, 1) == [E.Subscribed(q.notifier_id, sid)]
    assert server.tied_queues(sid) == [q.notifier_id]
    second = SmpClient(server.address)  # a reconnect: one NSUBS takes every tied queue
    second.service = creds
    clients.append(second)
    await second.start()
    assert second.service_id == sid
    second.subscribe_service(1, S.queue_ids_hash([q.notifier_id]))
    assert await take(second, 1) == [E.ServiceSubscribed(1, S.queue_ids_hash([q.notifier_id]))]
    assert await take(first, 1) == [E.ServiceEnded(1, S.queue_ids_hash([q.notifier_id]))]
    assert server.subscriber_of(q.notifier_id) == 2


async def test_a_refused_service_fails_the_handshake(make_server: ServerFactory, clients: list[SmpClient]) -> None:
    server = await make_server()
    server.services.refuse = True
    client = SmpClient(server.address)
    client.service = new_service_credentials()
    clients.append(client)
    with pytest.raises(ServiceRefused, match="BAD_SERVICE"):
        await client.start()


async def test_the_service_certificate_is_the_tls_client_certificate(make_server: ServerFactory,
                                                                     clients: list[SmpClient]) -> None:
    """As Haskell's getPeerCertChain check: the hello's service chain must be the one presented in TLS."""
    server = await make_server()
    creds, other = new_service_credentials(), new_service_credentials("another")  # (the stand-in's trust store
    # tells self-signed certificates apart by name)
    server.trust_service_certs(creds.chain, other.chain)
    good = SmpClient(server.address)
    good.service = creds
    clients.append(good)
    await good.start()
    assert good.service_id is not None
    for context in (tls.smp_service_context(other.chain, other.key), tls.smp_client_context()):
        liar = SmpClient(server.address, context=context)  # another certificate in TLS, or none
        liar.service = creds
        clients.append(liar)
        with pytest.raises(ServiceRefused, match="BAD_AUTH"):
            await liar.start()
