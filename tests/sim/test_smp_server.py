"""The sans-IO SMP client against the SMP stand-in over loopback TLS (spec §1.6, §1.8, §2.4, §3.1–3.2)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from smp_test_client import SmpTestClient, handshake, open_stream

from ntf_server.protocol import crypto, smp as S, smp_events as E
from ntf_server.protocol.encoding import SMPServer, pad
from ntf_server.protocol.error_types import AUTH, CmdError, CommandError, SimpleError
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    SMP_CLIENT_VRANGE,
    THParams,
    decode_block,
    encode_block,
    encode_transmission,
    parse_block,
)
from ntf_server.protocol.handshake import SmpClientHello
from ntf_server.protocol.smp_session import NotifierQueue, SmpProtocolError
from ntf_server.sim.smp_load import KeyType, seeded_queue
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.transport.certs import SignAlgorithm

ServerFactory = Callable[..., Awaitable[SmpServerStandIn]]


async def connect(server: SmpServerStandIn) -> SmpTestClient:
    return await SmpTestClient.connect(server.host, server.port, server.key_hash)


def new_queue(server: SmpServerStandIn, key: crypto.PrivateAuthKey | None = None
              ) -> tuple[NotifierQueue, QueueCredentials]:
    key = key or crypto.generate_ed25519()
    creds, _ = server.create_queue(crypto.public_of(key))
    return NotifierQueue(creds.notifier_id, key), creds


@pytest.mark.parametrize("version", SMP_CLIENT_VRANGE.all())
async def test_handshake_and_nsub_at_each_version(make_server: ServerFactory, version: int) -> None:
    server = await make_server(max_version=version)
    client = await connect(server)
    assert client.version == version
    assert (client.session.params.session_id != b"") and client.session.params.implied_session_id
    q, _ = new_queue(server)
    await client.subscribe([q])
    [raw] = await client.read_raw()
    assert raw.command == (b"SOK 0" if version >= 16 else b"OK")  # §3.2: SOK replaces OK from v16
    assert raw.entity_id == q.notifier_id
    assert await client.events(1) == [E.Subscribed(q.notifier_id)]
    assert server.subscriber_of(q.notifier_id) is not None
    await client.close()


@pytest.mark.parametrize("key_maker", [crypto.generate_ed25519, Ed448PrivateKey.generate, crypto.generate_x25519],
                         ids=["ed25519", "ed448", "x25519"])
@pytest.mark.parametrize("version", [7, 18, 20])
async def test_nsub_with_each_notifier_key_type(make_server: ServerFactory, version: int,
                                                key_maker: Callable[[], crypto.PrivateAuthKey]) -> None:
    server = await make_server(max_version=version, algorithm=SignAlgorithm.ED448)
    client = await connect(server)
    queues = [new_queue(server, key_maker())[0] for _ in range(3)]
    await client.subscribe(queues)
    assert sorted(await client.events(3), key=repr) == sorted((E.Subscribed(q.notifier_id) for q in queues), key=repr)
    await client.close()


async def test_auth_for_unknown_queue_wrong_key_and_wrong_key_type(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    unknown = NotifierQueue(os.urandom(24), crypto.generate_ed25519())
    q, _ = new_queue(server)
    wrong_key = NotifierQueue(q.notifier_id, crypto.generate_ed25519())
    x_queue, _ = new_queue(server, crypto.generate_x25519())
    wrong_type = NotifierQueue(x_queue.notifier_id, crypto.generate_ed25519())
    await client.subscribe([unknown, wrong_key, wrong_type])
    events = await client.events(3)
    assert events == [E.SubscriptionFailed(i.notifier_id, E.FailureKind.AUTH, AUTH)
                      for i in (unknown, wrong_key, wrong_type)]
    assert server.subscriber_of(q.notifier_id) is None
    await client.close()


async def test_second_subscriber_takes_over_and_first_gets_end(make_server: ServerFactory) -> None:
    server = await make_server()
    first, second = await connect(server), await connect(server)
    q, _ = new_queue(server)
    await first.subscribe([q])
    assert await first.events(1) == [E.Subscribed(q.notifier_id)]
    assert server.core.taken_from_live == 0
    await second.subscribe([q])
    assert await second.events(1) == [E.Subscribed(q.notifier_id)]
    assert await first.events(1) == [E.Ended(q.notifier_id)]
    assert first.session.state(q.notifier_id) is E.QueueState.ENDED
    assert server.core.taken_from_live == 1  # subscribed by two connections at once (tests/bench/two_instances.py)
    server.notify(q.notifier_id, b"m1", 1700000000)
    [msg] = await second.events(1)
    assert isinstance(msg, E.Message)
    await first.close()
    await second.close()


async def test_nmsg_delivered_and_pending_flushed_on_nsub(make_server: ServerFactory) -> None:
    server = await make_server()
    q, creds = new_queue(server)
    server.notify(q.notifier_id, b"early-1", 1700000001)
    server.notify(q.notifier_id, b"early-2", 1700000002)
    assert server.pending_notifications(q.notifier_id) == 2
    client = await connect(server)
    await client.subscribe([q])
    events = await client.events(3)
    assert events[0] == E.Subscribed(q.notifier_id)
    server.notify(q.notifier_id, b"live", 1700000003)
    events += await client.events(1)
    metas = []
    for ev in events[1:]:
        assert isinstance(ev, E.Message) and ev.notifier_id == q.notifier_id
        assert len(ev.enc_meta) == 144  # cbEncrypt(…, 128): opaque to the ntf server (§3.2)
        metas.append(S.decrypt_nmsg_meta(creds.rcv_ntf_dh_secret, ev.nonce, ev.enc_meta))
    assert metas == [S.NMsgMeta(b"early-1", 1700000001), S.NMsgMeta(b"early-2", 1700000002),
                     S.NMsgMeta(b"live", 1700000003)]
    assert server.pending_notifications(q.notifier_id) == 0
    await client.close()


async def test_notifications_kept_after_the_subscriber_disconnects(make_server: ServerFactory) -> None:
    server = await make_server()
    q, _ = new_queue(server)
    client = await connect(server)
    await client.subscribe([q])
    await client.events(1)
    await client.close()
    for _ in range(100):
        if server.subscriber_of(q.notifier_id) is None:
            break
        await asyncio.sleep(0.01)
    server.notify(q.notifier_id, b"while away", 1)
    assert server.pending_notifications(q.notifier_id) == 1
    again = await connect(server)
    await again.subscribe([q])
    assert [type(e) for e in await again.events(2)] == [E.Subscribed, E.Message]
    await again.close()


@pytest.mark.parametrize(("version", "expected"), [(9, E.Ended), (10, E.Deleted), (18, E.Deleted)])
async def test_deleted_queue_is_deld_from_v10_and_end_before(make_server: ServerFactory, version: int,
                                                             expected: type) -> None:
    server = await make_server(max_version=version)
    client = await connect(server)
    q, _ = new_queue(server)
    await client.subscribe([q])
    await client.events(1)
    server.delete_queue(q.notifier_id)
    [raw] = await client.read_raw()
    assert raw.command == (b"DELD" if version >= 10 else b"END")
    assert await client.events(1) == [expected(q.notifier_id)]
    await client.close()


async def test_ping_pong(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    await client.ping()
    assert await client.events(1) == [E.Pong()]
    assert client.session.awaiting() == 0
    await client.close()


async def test_many_nsubs_share_full_blocks(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    queues = [new_queue(server)[0] for _ in range(300)]
    assert await client.subscribe(queues) == 3  # 134 per 16 KB block at v18 with Ed25519 (§3.1)
    events = await client.events(300)
    assert {e.notifier_id for e in events if isinstance(e, E.Subscribed)} == {q.notifier_id for q in queues}
    await client.close()


async def test_garbage_from_the_server_is_a_protocol_error(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    await server.wait_connections(1)
    await server.send_garbage()
    with pytest.raises(SmpProtocolError):
        await client.events(1)
    await client.close()


async def test_unknown_and_prohibited_commands_are_answered(make_server: ServerFactory) -> None:
    """Bypass the session to send what a real client never would; the connection carries on."""
    server = await make_server(max_version=10)  # no block encryption: raw blocks can be written
    client = await connect(server)
    params = client.session.params
    for cmd, err in ((b"HELLO", CommandError.UNKNOWN), (b"SUB", CommandError.PROHIBITED),
                     (b"NSUB", CommandError.NO_AUTH), (b"PING x", CommandError.SYNTAX)):
        t = encode_transmission(params, b"c" * 24, b"", cmd)
        await client.stream.write_block(encode_block(b"\x01" + len(t).to_bytes(2, "big") + t, SMP_BLOCK_SIZE))
        [raw] = await client.read_raw()
        assert S.parse_broker_msg(raw.command, client.version) == S.SmpErr(CmdError(err))
    # The session sent none of these, so it reports their answers as unexpected.
    assert all(isinstance(e, E.Unexpected) for e in await client.events(4))
    await client.ping()
    assert await client.events(1) == [E.Pong()]
    await client.close()


async def test_bad_signature_is_auth(make_server: ServerFactory) -> None:
    server = await make_server(max_version=10)
    client = await connect(server)
    q, _ = new_queue(server)
    params = client.session.params
    t = encode_transmission(params, b"c" * 24, q.notifier_id, b"NSUB", auth=b"\x01" * 64)
    await client.stream.write_block(encode_block(b"\x01" + len(t).to_bytes(2, "big") + t, SMP_BLOCK_SIZE))
    [raw] = await client.read_raw()
    assert S.parse_broker_msg(raw.command, client.version) == S.SmpErr(AUTH)
    assert server.subscriber_of(q.notifier_id) is None
    await client.close()


@pytest.mark.parametrize("case", ["wrong key hash", "version above range", "version 6 below ours"])
async def test_server_closes_on_a_bad_client_hello(make_server: ServerFactory, case: str) -> None:
    server = await make_server(max_version=12)
    stream = await open_stream(server.host, server.port, server.key_hash)
    hs = await handshake(stream, server.key_hash)
    key_hash = os.urandom(32) if case == "wrong key hash" else server.key_hash
    version = {"version above range": 13, "version 6 below ours": 5}.get(case, 12)
    await stream.write_block(pad(SmpClientHello(version, key_hash, None).encode(), SMP_BLOCK_SIZE))
    assert hs.params.version == 12
    client = SmpTestClient(stream, None)  # type: ignore[arg-type]
    assert await client.closed_by_server()
    assert server.connections == 0


async def test_refused_handshake_and_dropped_connections(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    await server.wait_connections(1)
    server.drop_connections()
    assert await client.closed_by_server()
    server.refuse_handshakes = True
    stream = await open_stream(server.host, server.port, server.key_hash)
    assert await SmpTestClient(stream, None).closed_by_server()  # type: ignore[arg-type]
    server.refuse_handshakes = False
    again = await connect(server)
    await again.ping()
    assert await again.events(1) == [E.Pong()]
    await again.close()


async def test_stalled_server_answers_after_resume(make_server: ServerFactory) -> None:
    server = await make_server()
    client = await connect(server)
    await server.wait_connections(1)
    server.stall()
    await client.ping()
    with pytest.raises(TimeoutError):
        await client.events(1, timeout_s=0.3)
    assert client.session.expire(now=asyncio.get_running_loop().time() + 60, timeout_s=30) == [E.PingTimedOut()]
    server.stall(False)
    # The PING was given up by expire(): its PONG arrives for a corrId nobody waits for.
    [ev] = await client.events(1)
    assert isinstance(ev, E.Unexpected)
    await client.close()


@pytest.mark.parametrize("key_type", list(KeyType))
async def test_standalone_server_with_seeded_queues_and_a_notification_source(key_type: KeyType) -> None:
    """Another process derives the queues' keys and secrets from the seed; NMSGs carry their send time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ntf_server.sim.smp_server", "--port", "0", "--queues", "3", "--seed", "t",
        "--key-type", key_type.value, "--nmsg-per-s", "300",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("started smp://") and "@127.0.0.1:" in line
        addr = SMPServer.from_uri(line.split()[1])
        client = await SmpTestClient.connect(addr.hosts[0], addr.effective_port, addr.key_hash)
        seeded = [seeded_queue(b"t", i, key_type) for i in range(3)]
        await client.subscribe([NotifierQueue(q.notifier_id, q.notifier_key) for q in seeded])
        events = await client.events(9)
        assert sum(isinstance(e, E.Subscribed) for e in events) == 3
        secrets = {q.notifier_id: q.rcv_ntf_dh_secret for q in seeded}
        for ev in events:
            if isinstance(ev, E.Message):
                meta = S.decrypt_nmsg_meta(secrets[ev.notifier_id], ev.nonce, ev.enc_meta)
                assert 0 <= time.time_ns() - int.from_bytes(meta.msg_id, "big") < 30 * 10**9
        await client.close()
    finally:
        proc.terminate()
        await proc.wait()


async def test_v6_client_sends_the_session_id_in_each_transmission(make_server: ServerFactory) -> None:
    """The stand-in speaks v6 like a real server (our own client starts at v7: no chain to pin in v6)."""
    server = await make_server(max_version=18)
    stream = await open_stream(server.host, server.port, server.key_hash)
    hello_block = await stream.read_block()
    session_id = stream.session_id()
    await stream.write_block(pad(SmpClientHello(6, server.key_hash, None).encode(), SMP_BLOCK_SIZE))
    params = THParams.smp(6, session_id)
    assert not params.implied_session_id
    assert hello_block  # (its v7+ part is ignored by a v6 client)
    for sid, expected in ((session_id, b"PONG"), (b"s" * 32, b"ERR SESSION")):
        tp = THParams.smp(6, sid)
        t = encode_transmission(tp, b"c" * 24, b"", b"PING")
        await stream.write_block(encode_block(b"\x01" + len(t).to_bytes(2, "big") + t, SMP_BLOCK_SIZE))
        [raw] = parse_block(params, decode_block(await stream.read_block(), SMP_BLOCK_SIZE))
        assert not isinstance(raw, Exception) and raw.command == expected
    await stream.close()


async def test_garbage_from_one_client_is_answered_and_others_carry_on(make_server: ServerFactory) -> None:
    server = await make_server(max_version=10)
    bad, good = await connect(server), await connect(server)
    q, _ = new_queue(server)
    await good.subscribe([q])
    assert await good.events(1) == [E.Subscribed(q.notifier_id)]
    await bad.stream.write_block(b"\xff" * SMP_BLOCK_SIZE)  # not a padded block: ERR BLOCK
    [raw] = await bad.read_raw()
    assert S.parse_broker_msg(raw.command, bad.version) == S.SmpErr(SimpleError("BLOCK"))
    assert [type(e) for e in await bad.events(1)] == [E.ServerError]
    await bad.ping()  # the connection still works
    assert await bad.events(1) == [E.Pong()]
    server.notify(q.notifier_id, b"m", 1)
    assert [type(e) for e in await good.events(1)] == [E.Message]
    await bad.close()
    await good.close()


async def test_restart_on_a_new_port_keeps_identity_queues_and_pending_notifications(
        make_server: ServerFactory) -> None:
    server = await make_server()
    q, _ = new_queue(server)
    client = await connect(server)
    await client.subscribe([q])
    await client.events(1)
    old_port, key_hash = server.port, server.key_hash
    await server.close()
    assert await client.closed_by_server()
    assert server.subscriber_of(q.notifier_id) is None
    server.notify(q.notifier_id, b"during restart", 1)
    await server.start(port=0)
    assert server.port != old_port and server.key_hash == key_hash
    again = await connect(server)
    await again.subscribe([q])
    assert [type(e) for e in await again.events(2)] == [E.Subscribed, E.Message]
    await again.close()
    new_port = server.port
    await server.close()
    await server.start()  # the same port as last time
    assert server.port == new_port
    await (await connect(server)).close()
