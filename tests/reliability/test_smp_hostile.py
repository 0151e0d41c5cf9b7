"""The SMP client against a hostile SMP server (issue 16, reliability suite): garbage and oversized blocks,
lying batch counts, unknown messages, NMSG floods, END storms, stalls and slowloris writes, before and after
the handshake. While one app's SMP server attacks, another app's notifications (on a well-behaved SMP
stand-in) are still pushed, NTF clients are still served, the hostile server is not reconnected to in a
busy loop, and nothing is logged as an error or with a traceback."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from e2e_env import Env, active_app
from hostile_smp import Attack, HostileSmp
from watch import LogWatch

from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient
from ntf_server.sim.smp_server import SmpServerStandIn

ATTACK_S = 2.0  # how long the attack runs before the well-behaved side is checked
# Reconnects to a server that breaks every connection: the pool's backoff (0.5 s doubling, jittered)
# allows a handful in the first seconds; a busy loop would be hundreds.
MAX_CONNECTIONS_PER_S = 3.0
BREAKS_THE_SESSION = frozenset({Attack.GARBAGE_HELLO, Attack.GARBAGE_BLOCKS, Attack.OVERSIZED, Attack.WRONG_COUNT})


async def test_hostile_smp_server_harms_nobody_else(
    env: Env, make_server: object, log_watch: LogWatch, tmp_path: Path, attack: Attack
) -> None:
    good: SmpServerStandIn = await make_server()  # type: ignore[operator]
    hostile = HostileSmp(attack, tmp_path / "hostile")
    await hostile.start()
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    try:
        victim, bystander = await active_app(env, client), await active_app(env, client)
        hostile_key, good_key = crypto.generate_ed25519(), crypto.generate_ed25519()
        nid = hostile.create_queue(crypto.public_of(hostile_key))
        assert isinstance(await victim.subscribe(client, hostile.address, nid, hostile_key), P.IdSub)
        creds, _ = good.create_queue(crypto.public_of(good_key))
        assert isinstance(await bystander.subscribe(client, good.address, creds.notifier_id, good_key), P.IdSub)
        async with asyncio.timeout(10):
            await hostile.attacking.wait()
        await asyncio.sleep(ATTACK_S)

        good.notify(creds.notifier_id, os.urandom(24), int(time.time()))
        push = await env.sim.next_push(bystander.device_token.token.decode(), timeout_s=10.0)
        assert len(bystander.message_list(push.body)) == 1
        assert (await client.request(b"", P.Ping()))[1] == P.Pong()
        assert hostile.connections_per_s() <= MAX_CONNECTIONS_PER_S, hostile
        print(f"{hostile!r}: {hostile.connections_per_s():.2f} connections/s")
        assert hostile.sent > 0 or attack is Attack.STALL, hostile
        if attack in BREAKS_THE_SESSION:  # the client must hang up (and come back, with backoff)
            assert hostile.connections >= 2, hostile
        log_watch.assert_clean()
    finally:
        await client.close()
        await hostile.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attack" in metafunc.fixturenames:
        metafunc.parametrize("attack", list(Attack), ids=[a.value for a in Attack])
