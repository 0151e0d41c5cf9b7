"""The SMP client against a hostile SMP server (issue 16, reliability suite): garbage and oversized blocks,
lying batch counts, unknown messages, NMSG floods, END storms, stalls and slowloris writes, before and after
the handshake. While one app's SMP server attacks, another app's notifications (on a well-behaved SMP
stand-in) are still pushed, NTF clients are still served, the hostile server is not reconnected to in a
busy loop, and nothing is logged as an error or with a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.e2e_env import Env, active_app
from hostile_smp import Attack, HostileSmp
from watch import LogWatch

from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn

ATTACK_S = 2.0  # how long the attack runs before the well-behaved side is checked
# ... 1 s for an attack on one connection, which the client keeps: no reconnect rate to measure over a window
ONE_CONNECTION_ATTACK_S = 1.0
# Reconnects to a server that breaks every connection: the pool's backoff (0.5 s doubling, jittered)
# allows a handful in the first seconds; a busy loop would be hundreds.
MAX_CONNECTIONS_PER_S = 3.0
# A bystander's push under attack: about 0.1 s when nothing floods, 1.3 s seen with the suite's other worker
# and other jobs on the 2 cores; before the fair intake, 3.1 s on a quiet machine (more under load).
FAIR_PUSH_S = 2.0
BREAKS_THE_SESSION = frozenset({Attack.GARBAGE_HELLO, Attack.GARBAGE_BLOCKS, Attack.OVERSIZED, Attack.WRONG_COUNT})


@dataclass
class Attacked:
    """An NTF client with two active apps: the victim's queue on the hostile server, the bystander's on a
    well-behaved stand-in; the attack has begun."""

    client: NtfClient
    hostile: HostileSmp
    good: SmpServerStandIn
    bystander: SimApp
    queue: QueueCredentials

    async def bystander_push_s(self, env: Env) -> float:
        """A notification on the well-behaved server: seconds until its push reaches APNs."""
        t0 = time.monotonic()
        self.good.notify(self.queue.notifier_id, os.urandom(24), int(time.time()))
        push = await env.sim.next_push(self.bystander.device_token.token.decode(), timeout_s=10.0)
        assert len(self.bystander.message_list(push.body)) >= 1
        return time.monotonic() - t0


@contextlib.asynccontextmanager
async def attacked(env: Env, make_server: object, directory: Path, attack: Attack,
                   attack_s: float = ATTACK_S) -> AsyncIterator[Attacked]:
    good: SmpServerStandIn = await make_server()  # type: ignore[operator]
    hostile = HostileSmp(attack, directory)
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
        await asyncio.sleep(attack_s)
        yield Attacked(client, hostile, good, bystander, creds)
    finally:
        await client.close()
        await hostile.close()


async def test_hostile_smp_server_harms_nobody_else(
    env: Env, make_server: object, log_watch: LogWatch, tmp_path: Path, attack: Attack
) -> None:
    attack_s = ATTACK_S if attack in BREAKS_THE_SESSION else ONE_CONNECTION_ATTACK_S
    async with attacked(env, make_server, tmp_path / "hostile", attack, attack_s) as a:
        await a.bystander_push_s(env)
        assert (await a.client.request(b"", P.Ping()))[1] == P.Pong()
        hostile = a.hostile
        print(f"{hostile!r}: {hostile.connections_per_s():.2f} connections/s")
        assert hostile.connections_per_s() <= MAX_CONNECTIONS_PER_S, hostile
        assert hostile.sent > 0 or attack is Attack.STALL, hostile
        if attack in BREAKS_THE_SESSION:  # the client must hang up (and come back, with backoff)
            assert hostile.connections >= 2, hostile
        log_watch.assert_clean()


async def test_an_nmsg_flood_does_not_delay_another_servers_notifications(
    env: Env, make_server: object, tmp_path: Path
) -> None:
    """Issue 16 item 12: before the fair intake per SMP server, a flood filled the shared push queue and the
    bystander's push waited behind it (median 3.1 s in this test's setting)."""
    async with attacked(env, make_server, tmp_path / "hostile", Attack.NMSG_FLOOD) as a:
        delays = [await a.bystander_push_s(env) for _ in range(3)]
        print(f"bystander push under an NMSG flood: {sorted(delays)} s")
        assert statistics.median(delays) <= FAIR_PUSH_S


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attack" in metafunc.fixturenames:
        metafunc.parametrize("attack", list(Attack), ids=[a.value for a in Attack])
