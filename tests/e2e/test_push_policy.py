"""The push policy end to end (DESIGN "Push policy"): stored NMSGs → the policy → the strict APNs simulator →
the app decrypting what arrives. The policy is set live through Redis (``PolicyStore.put``, what the
admin API does); the budget's clock is a fake one (``push.hidden.clock``) so budgets return without waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers.e2e_env import Env, active_app
from helpers.fault_proxy import FaultProxy

from apns.simulator import RecordedPush
from ntf_server.observability import logevents
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.push.payload import MAX_BODY
from ntf_server.push.policy import PolicySettings
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import Notice

SMP = SMPServer(("smp1.example.com",), "5223", b"\x07" * 32)
T0 = 1_900_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def set_policy(server: NtfServer, **policy: object) -> None:
    await PolicyStore(server.store.dataset).put(PolicySettings.from_json(policy))


def with_clock(server: NtfServer, clock: FakeClock) -> NtfServer:
    assert server.push is not None and server.push.hidden is not None
    server.push.hidden.clock = clock
    return server


def text(n: Notice) -> str:
    return (f"{SMP.to_uri()}/{b64u_encode(n.notifier_id)} {n.received_at_ms // 1000} "
            f"{b64u_encode(n.nonce)} {b64u_encode(n.enc_meta)}")


class Burst:
    """One app with ``n`` queues; ``send`` stores one NMSG per queue (as separate SMP blocks) and hands each to
    a server's push service, exactly as the subscriber pool does."""

    def __init__(self, app: SimApp, nids: list[bytes]) -> None:
        self.app = app
        self.nids = nids
        self.sent: list[Notice] = []

    @classmethod
    async def create(cls, env: Env, client: NtfClient, n: int) -> Burst:
        app = await active_app(env, client)
        nids = [os.urandom(24) for _ in range(n)]
        for nid in nids:
            assert isinstance(await app.subscribe(client, SMP, nid, crypto.generate_ed25519()), P.IdSub)
        return cls(app, nids)

    @property
    def device(self) -> str:
        return self.app.device_token.token.decode()

    async def send(self, servers: Sequence[NtfServer], count: int | None = None) -> None:
        for i in range(count or len(self.nids)):
            server = servers[i % len(servers)]
            k = len(self.sent)
            n = Notice(SMP, self.nids[k % len(self.nids)], 1_700_000_000_000 + 1000 * k, os.urandom(24),
                       os.urandom(144))
            self.sent.append(n)
            assert server.push is not None
            await server.push.accept(SMP, [n])
            await server.push.settle()

    def check(self, push: RecordedPush, newest_of: int) -> list[str]:
        """The push is well formed and carries the newest <= 6 of the first ``newest_of`` notifications."""
        assert len(push.body) <= MAX_BODY
        body = push.json()
        if push.push_type == "background":
            assert push.priority == 5
            assert body["aps"] == {"content-available": 1} and body["notificationData"]["checkMessages"] is True
        else:
            assert push.push_type == "alert" and body["aps"]["mutable-content"] == 1
        items = self.app.message_list(push.body)
        assert items == [text(n) for n in self.sent[max(0, newest_of - 6):newest_of]]
        return items


async def pushes(env: Env, device: str, n: int) -> list[RecordedPush]:
    return [await env.sim.next_push(device) for _ in range(n)]


async def no_more_pushes(env: Env, device: str, wait_s: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await env.sim.next_push(device, timeout_s=wait_s)


@pytest.mark.parametrize("overflow", ["alert", "drop", "defer"])
async def test_a_burst_over_the_budget_follows_the_overflow_mode(env: Env, overflow: str) -> None:
    """8 notifications at once, budget 3/h burst 3: 3 hidden pushes, then 5 alerts / 5 dropped / one hidden
    push 20 minutes later carrying the newest 6."""
    clock = FakeClock()
    server = with_clock(env.server, clock)
    await set_policy(server, hidden_per_hour=3, burst=3, overflow=overflow)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 8)
    await burst.send([server])
    for i, push in enumerate(await pushes(env, burst.device, 3)):
        assert push.push_type == "background"
        burst.check(push, i + 1)
    stats = server.stats
    match overflow:
        case "alert":
            for i, push in enumerate(await pushes(env, burst.device, 5)):
                assert push.push_type == "alert"
                burst.check(push, i + 4)
            assert (stats["ntf_hidden"], stats["ntf_alert"]) == (3, 5)
        case "drop":
            assert (stats["ntf_hidden"], stats["ntf_dropped"]) == (3, 5)
        case "defer":
            await no_more_pushes(env, burst.device)
            clock.now = T0 + 1199
            await no_more_pushes(env, burst.device)
            clock.now = T0 + 1200  # the budget returns: one hidden push with the newest 6
            [push] = await pushes(env, burst.device, 1)
            assert push.push_type == "background"
            burst.check(push, 8)
            assert (stats["ntf_hidden"], stats["ntf_deferred"], stats["ntf_deferred_sent"]) == (3, 5, 1)
    await no_more_pushes(env, burst.device)
    assert stats["ntf_delivered"] == len(env.sim.pushes(burst.device)) - 1  # all but the verification push
    await client.close()


async def test_a_deferred_push_survives_a_server_restart(env: Env) -> None:
    clock = FakeClock()
    server = with_clock(env.server, clock)
    await set_policy(server, hidden_per_hour=3, burst=1, overflow="defer")
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 4)
    await burst.send([server])
    [first] = await pushes(env, burst.device, 1)
    burst.check(first, 1)
    await client.close()
    restarted = with_clock(await env.restart(), clock)
    await no_more_pushes(env, burst.device)
    clock.now = T0 + 1200
    [push] = await pushes(env, burst.device, 1)
    assert push.push_type == "background"
    burst.check(push, 4)
    assert restarted.stats["ntf_deferred_sent"] == 1


async def test_two_servers_on_one_redis_share_one_budget_per_device_token(env: Env) -> None:
    """Whichever instance stores and pushes the notification, the device token has one budget."""
    clock = FakeClock()
    cfg = env.config
    second = NtfServer(dataclasses.replace(
        cfg, server=dataclasses.replace(cfg.server, port=0, state_dir=cfg.server.state_dir.parent / "state2")))
    await second.start()
    env.servers.insert(0, second)  # stopped by the fixture
    servers = [with_clock(env.server, clock), with_clock(second, clock)]
    await set_policy(servers[0], hidden_per_hour=3, burst=3, overflow="alert")
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 6)
    await burst.send(servers)  # alternately through each server
    got = await pushes(env, burst.device, 6)
    assert [p.push_type for p in got] == ["background"] * 3 + ["alert"] * 3
    assert sum(s.stats["ntf_hidden"] for s in servers) == 3 and sum(s.stats["ntf_alert"] for s in servers) == 3
    assert all(s.stats["ntf_hidden"] > 0 for s in servers)
    await client.close()


async def test_a_live_policy_change_is_used_by_the_next_push(env: Env) -> None:
    clock = FakeClock()
    server = with_clock(env.server, clock)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 6)
    await burst.send([server], 1)  # the config's [push]: parity in the test environment
    await set_policy(server, hidden_per_hour=3, burst=1)
    await burst.send([server], 2)
    await set_policy(server, hidden_per_hour=3, burst=1, environments={"test": {"hidden_per_hour": 0}})
    await burst.send([server], 1)
    await PolicyStore(server.store.dataset).clear()
    await burst.send([server], 1)
    got = await pushes(env, burst.device, 5)
    assert [p.push_type for p in got] == ["alert", "background", "alert", "alert", "alert"]
    for i, push in enumerate(got):
        burst.check(push, i + 1)
    await client.close()


async def test_periodic_pushes_from_the_first_interval_skipped_after_a_hidden_push(env: Env) -> None:
    server = with_clock(await env.reconfigure("push", cron_scan_s=1.0), clock := FakeClock(time.time()))
    await set_policy(server, hidden_per_hour=3, burst=3)
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 1)
    assert await burst.app.token_command(client, P.TCrn(20)) == P.Ok()
    await no_more_pushes(env, burst.device, 1.5)
    clock.now += 1201  # the first interval passed (the Haskell server never sends this one, spec §5.10)
    [cron] = await pushes(env, burst.device, 1)
    # the hidden push's shape and size (one ciphertext length for every kind), carrying no notification yet
    body = cron.json()
    assert cron.push_type == "background" and body["aps"] == {"content-available": 1}
    assert body["notificationData"]["checkMessages"] is True and burst.app.message_list(cron.body) == []
    clock.now += 600
    await burst.send([server])  # a hidden message push within the next interval ...
    await pushes(env, burst.device, 1)
    clock.now += 600  # ... so the next periodic push is skipped
    for _ in range(40):
        if server.stats["ntf_cron_skipped"]:
            break
        await asyncio.sleep(0.1)
    assert (server.stats["ntf_cron_delivered"], server.stats["ntf_cron_skipped"]) == (1, 1)
    await no_more_pushes(env, burst.device)
    await client.close()


async def test_a_deferred_push_is_not_sent_to_a_token_deleted_meanwhile(env: Env) -> None:
    clock = FakeClock()
    server = with_clock(env.server, clock)
    await set_policy(server, hidden_per_hour=3, burst=1, overflow="defer")
    client = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
    burst = await Burst.create(env, client, 2)
    await burst.send([server])
    await pushes(env, burst.device, 1)
    assert server.push.hidden is not None
    budgets, redis = server.push.hidden.budgets, server.store.client
    tid = burst.app.token_id
    assert await redis.exists(budgets.pending_key(tid)) and await redis.zscore(budgets.due_key_of(tid), tid) is not None
    assert await burst.app.token_command(client, P.TDel()) == P.Ok()
    # TDEL removes the pending push with the token (it used to stay until the scheduler found it stale)
    assert not await redis.exists(budgets.pending_key(tid)) and await redis.zscore(budgets.due_key_of(tid), tid) is None
    clock.now = T0 + 1200
    await no_more_pushes(env, burst.device, 0.5)
    assert (server.stats["ntf_deferred"], server.stats["ntf_deferred_sent"]) == (1, 0)
    await client.close()


async def test_schedulers_log_a_redis_outage_once_not_every_scan(
    env: Env, tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The deferred-push scheduler scans every 50 ms here: a line per failed scan flooded the log while
    Redis was away (seen in CI). Now one line per scheduler, then one summary a minute."""
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "redis-proxy.sock")
    await proxy.start()
    await env.server.stop()
    cfg = dataclasses.replace(env.server.config, redis=dataclasses.replace(env.server.config.redis, url=proxy.url),
                              push=dataclasses.replace(env.server.config.push, cron_scan_s=1.0))
    server = NtfServer(cfg)
    env.servers.append(server)
    await server.start()
    caplog.set_level(logging.INFO)
    await proxy.stop()
    await asyncio.sleep(1.5)  # ~30 deferred-push, 2 periodic-push and 2 push-retry scans with Redis away
    errors = [fields for name, fields in map(logevents.event_of, caplog.records) if name == "scheduler.store_error"]
    assert sorted(str(f["part"]) for f in errors) == ["deferred pushes", "periodic pushes", "push retries"]
