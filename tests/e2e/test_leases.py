"""Two NTF servers on one Redis (issue 18, SMP servers owned by leases): each SMP server is subscribed by
exactly one of them; when one dies without a graceful stop, the other takes its SMP servers within the lease
time and every notification sent afterwards is pushed exactly once. Real parts throughout: two NtfServers,
one Redis, four SMP stand-ins, the APNs simulator. Then a third instance joins and is handed half of
the SMP servers, each still subscribed by one connection."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from helpers.e2e_env import Env, active_app

from ntf_server.protocol import crypto, ntf as P, smp as S
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn

TTL_S, RENEW_S = 2.0, 0.5
SERVERS, QUEUES = 4, 3  # SMP stand-ins, queues on each


@pytest.fixture
async def stand_ins() -> AsyncIterator[list[SmpServerStandIn]]:
    servers = [SmpServerStandIn() for _ in range(SERVERS)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.close()


async def until(cond: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the stand-ins' and servers' states have no common event
            await asyncio.sleep(0.05)


async def crash(server: NtfServer) -> None:
    """Everything the process held is closed (sockets), nothing is handed over: no wind-down, so no lease is
    released and nothing drains, as after kill -9."""
    stack, server._stack = server._stack, None
    assert stack is not None
    await stack.aclose()


def last_message(app: SimApp, body: bytes, queues: dict[bytes, tuple[SmpServerStandIn, QueueCredentials, bytes]],
                 ) -> bytes:
    """The message id of the notification that caused a push (the last of its list, spec §5.7)."""
    where, _, nonce, enc_meta = app.message_list(body)[-1].split(" ")
    nid = b64u_decode(where.rpartition("/")[2])
    meta = S.decrypt_nmsg_meta(queues[nid][1].rcv_ntf_dh_secret, b64u_decode(nonce), b64u_decode(enc_meta))
    return meta.msg_id


async def subscribe_all(client: NtfClient, app: SimApp, stand_ins: list[SmpServerStandIn],
                        ) -> dict[bytes, tuple[SmpServerStandIn, QueueCredentials, bytes]]:
    out = {}
    for smp in stand_ins:
        for _ in range(QUEUES):
            key = crypto.generate_ed25519()
            creds, _ = smp.create_queue(crypto.public_of(key))
            resp = await app.subscribe(client, smp.address, creds.notifier_id, key)
            assert isinstance(resp, P.IdSub)
            out[creds.notifier_id] = (smp, creds, resp.sub_id)
    return out


def owners(stand_ins: list[SmpServerStandIn], queues: dict[bytes, tuple[SmpServerStandIn, QueueCredentials, bytes]],
           ) -> list[set[int | None]]:
    """Per stand-in: the connections its queues are subscribed on."""
    return [{smp.subscriber_of(nid) for nid, (s, _, _) in queues.items() if s is smp} for smp in stand_ins]


async def test_each_smp_server_has_one_owner_and_a_dead_instances_servers_are_taken_over(
        env: Env, stand_ins: list[SmpServerStandIn], tmp_path: Path) -> None:
    a = await env.reconfigure("subscriber", lease_ttl_s=TTL_S, lease_renew_s=RENEW_S)
    cfg_b = dataclasses.replace(a.config, server=dataclasses.replace(a.config.server, state_dir=tmp_path / "b",
                                                                       port=0))
    b = NtfServer(cfg_b)
    await b.start()
    try:
        assert a.leases is not None and b.leases is not None and a.leases.instance != b.leases.instance
        await until(lambda: a.leases.alive == 2 and b.leases.alive == 2, 10)  # type: ignore[union-attr]
        # SNEWs on both: servers nobody owns yet, then owned by one or the other (hand-off)
        client_a = await NtfClient.connect("127.0.0.1", a.port, env.key_hash)
        client_b = await NtfClient.connect("127.0.0.1", b.port, env.key_hash)
        app = await active_app(env, client_a)
        queues = await subscribe_all(client_a, app, stand_ins[:2])
        queues |= await subscribe_all(client_b, app, stand_ins[2:])
        await until(lambda: all(len(o) == 1 and None not in o for o in owners(stand_ins, queues)), 20)
        assert [smp.connections for smp in stand_ins] == [1] * SERVERS  # one instance each, never both
        held_a = {x.server for x in a.leases.held()}
        held_b = {x.server for x in b.leases.held()}
        assert not held_a & held_b and held_a | held_b == {s.address for s in stand_ins}
        print(f"SMP servers held: {len(held_a)} and {len(held_b)}")
        for _, _, sub_id in queues.values():
            _, resp = await client_a.request(sub_id, P.SChk(), app.auth_key)
            assert resp == P.Sub(P.SubStatus(P.SubStatusKind.ACTIVE))

        device = app.device_token.token.decode()
        for smp, creds, _ in queues.values():
            smp.notify(creds.notifier_id, b"both-" + creds.notifier_id[:4], 1_700_000_001)

        def message_pushes() -> list[bytes]:
            return [p.body for p in env.sim.pushes(device) if b'"message"' in p.body]  # not the verification

        await until(lambda: len(message_pushes()) >= len(queues), 20)
        for server in (a, b):  # every push answered and acknowledged: a crash leaves none to send again
            assert server.push is not None
            await server.push.settle()

        # the instance holding more servers dies; the other takes them over within the lease time
        dead, alive = (a, b) if len(held_a) >= len(held_b) else (b, a)
        dead_held = held_a if dead is a else held_b
        before = owners(stand_ins, queues)
        await client_a.close()
        await client_b.close()
        await crash(dead)
        loop = asyncio.get_running_loop()
        crashed_at = loop.time()

        def taken_over() -> bool:
            now = owners(stand_ins, queues)
            return all(len(o) == 1 and None not in o and (smp.address not in dead_held or o != old)
                       for smp, o, old in zip(stand_ins, now, before, strict=True))

        await until(taken_over, TTL_S + RENEW_S + 20)
        took_s = loop.time() - crashed_at
        assert alive.leases is not None
        assert {x.server for x in alive.leases.held()} == {s.address for s in stand_ins}
        assert [smp.connections for smp in stand_ins] == [1] * SERVERS

        for smp, creds, _ in queues.values():
            smp.notify(creds.notifier_id, b"after-" + creds.notifier_id[:4], 1_700_000_002)
        await until(lambda: len(message_pushes()) >= 2 * len(queues), 20)
        assert alive.push is not None
        await alive.push.settle()
        causes = Counter(last_message(app, body, queues) for body in message_pushes())
        assert causes == {b"both-" + nid[:4]: 1 for nid in queues} | {b"after-" + nid[:4]: 1 for nid in queues}
        assert alive.stats["smp_sub_end"] == 0  # no queue was ever subscribed on two connections at once
        print(f"taken over {took_s:.2f} s after the crash (lease {TTL_S} s, renewal {RENEW_S} s)")

        # a third instance joins: the survivor hands it SMP servers, one a round, each subscribed by one
        cfg_c = dataclasses.replace(a.config, server=dataclasses.replace(a.config.server, state_dir=tmp_path / "c",
                                                                           port=0))
        c = NtfServer(cfg_c)
        await c.start()
        try:
            assert c.leases is not None
            await until(lambda: len(c.leases.held()) == SERVERS // 2, 20)  # type: ignore[union-attr]
            await until(lambda: all(len(o) == 1 and None not in o for o in owners(stand_ins, queues)), 20)
            assert [smp.connections for smp in stand_ins] == [1] * SERVERS
            assert len(alive.leases.held()) == SERVERS // 2
            assert alive.stats["smp_sub_end"] == 0 and c.stats["smp_sub_end"] == 0
        finally:
            await c.stop()
    finally:
        await b.stop()
