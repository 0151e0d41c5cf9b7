"""Faults under load (issue 16, reliability suite): Redis unreachable for 5 s, Redis killed with -9
(AOF everysec), the server killed with -9, APNs answering 429/5xx, sending GOAWAY or stalling, an SMP
server dropping or stalling. Properties: the server stays up and answers clearly (ERR STORE, not a hang),
recovers by itself, and loses nothing it acknowledged, except, for a kill -9 of Redis, writes acknowledged
within the AOF fsync window (``appendfsync everysec``), which is measured here and documented in README."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from helpers.e2e_env import Env, running_env
from helpers.fault_proxy import FaultProxy
from load import Registrar, lost
from server_process import UNLIMITED_REGISTRATION, server_world
from watch import LogWatch

from ntf_server.protocol import ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.store.embedded import EmbeddedRedis

UNLIMITED = {"per_connection_per_min": 0.0, "per_ip_per_min": 0.0}  # registration limits: load, not abuse
WORKERS = 4
OUTAGE_S = 5.0  # longer than CLEAR_ANSWER_S: requests meet the outage, not only its start
CLEAR_ANSWER_S = 3.0  # every request is answered within this, outage or not (the store's command timeout)
AOF_WINDOW_S = 2.0  # everysec fsyncs each second; Redis documents up to 2 s of writes lost in the worst case


async def until(check: Callable[[], bool], timeout_s: float = 15.0) -> float:
    """Waits for ``check``; returns how long it took."""
    t0 = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - load counters have no event to wait on
            await asyncio.sleep(0.02)
    return time.monotonic() - t0


def registrar(env: Env, smp: SmpServerStandIn) -> Registrar:
    async def verification(app: SimApp) -> bytes:
        return app.verification_code((await env.sim.next_push(app.device_token.token.decode(), 30.0)).body)

    return Registrar("127.0.0.1", env.port, env.key_hash, smp.address,
                     lambda key: smp.create_queue(key)[0].notifier_id, verification)


async def test_redis_away_5s_under_load_answers_clearly_recovers_and_loses_nothing(
    env: Env, make_server: Callable[..., object], tmp_path: Path, redis_url: str, log_watch: LogWatch
) -> None:
    proxy = FaultProxy(redis_url.removeprefix("unix://"), tmp_path / "redis-proxy.sock")
    await proxy.start()
    server = await env.reconfigure_sections({"registration": UNLIMITED, "redis": {"url": proxy.url}})
    smp: SmpServerStandIn = await make_server()  # type: ignore[misc]
    load, stop = registrar(env, smp), asyncio.Event()
    running = asyncio.create_task(load.run(WORKERS, stop))
    try:
        await until(lambda: len(load.promises) >= 20)
        await proxy.stop()
        cut_at = time.monotonic()
        await until(lambda: not server.store.healthy, timeout_s=CLEAR_ANSWER_S)
        acked_at_cut = len(load.promises)
        probe = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
        assert (await probe.request(b"", P.Ping()))[1] == P.Pong()  # up and serving
        await asyncio.sleep(OUTAGE_S - (time.monotonic() - cut_at))
        during = dict(load.answers)
        assert len(load.promises) - acked_at_cut <= WORKERS  # only answers already on their way
        await proxy.start()
        recovered_s = await until(lambda: len(load.promises) >= acked_at_cut + 20 + WORKERS)
    finally:
        stop.set()
        await running
    lost_tokens, lost_subs = await lost(probe, load.promises)
    await probe.close()
    await proxy.stop()
    print(f"redis away {OUTAGE_S:.0f} s: {len(load.promises)} tokens acknowledged, answers during {during}, "
          f"slowest answer {load.slowest_answer_s:.2f} s, registering again {recovered_s:.2f} s after Redis "
          f"returned; lost {len(lost_tokens)} tokens, {len(lost_subs)} subscriptions")
    assert any("StoreErr" in k for k in during)  # a clear error, not silence
    assert load.slowest_answer_s < CLEAR_ANSWER_S
    assert lost_tokens == [] and lost_subs == []
    log_watch.assert_no_traceback()


async def test_redis_kill_9_loses_only_what_was_acknowledged_within_the_aof_window(
    tmp_path: Path, make_server: Callable[..., object], log_watch: LogWatch
) -> None:
    redis = EmbeddedRedis(tmp_path / "state")
    await redis.start()
    try:
        (tmp_path / "env").mkdir()
        async with running_env(tmp_path / "env", redis.url) as env:
            server = await env.reconfigure("registration", **UNLIMITED)
            smp: SmpServerStandIn = await make_server()  # type: ignore[misc]
            load, stop = registrar(env, smp), asyncio.Event()
            running = asyncio.create_task(load.run(WORKERS, stop))
            try:
                await until(lambda: len(load.promises) >= 50)
                await asyncio.sleep(1.5)  # a steady state: older writes fsynced, newer ones in the window
                redis.kill()
                killed_at = time.monotonic()
                acked = len(load.promises)
                await redis.start()
                back_s = await until(lambda: len(load.promises) >= acked + 20 + WORKERS)
            finally:
                stop.set()
                await running
            probe = await NtfClient.connect("127.0.0.1", env.port, env.key_hash)
            lost_tokens, lost_subs = await lost(probe, load.promises)
            await probe.close()
            assert server.store.healthy
    finally:
        await redis.stop()
    ages = [killed_at - p.at for p in lost_tokens] + [killed_at - at for _, at in lost_subs]
    print(f"redis kill -9: {acked} tokens acknowledged before the kill, lost {len(lost_tokens)} tokens and "
          f"{len(lost_subs)} subscriptions, acknowledged at most {max(ages, default=0):.3f} s before the kill; "
          f"registering again {back_s:.2f} s after the restart began")
    assert all(age <= AOF_WINDOW_S for age in ages), sorted(ages)[-5:]
    log_watch.assert_no_traceback()


async def test_server_kill_9_during_registrations_and_subscriptions_loses_nothing(
    tmp_path: Path, redis_url: str, make_server: Callable[..., object], log_watch: LogWatch
) -> None:
    """Every answer is given after the store has the change, so a server killed mid-request loses only
    requests not yet answered (the app retries them); its subscriptions are taken up again on restart."""
    smp: SmpServerStandIn = await make_server()  # type: ignore[misc]
    async with server_world(tmp_path, UNLIMITED_REGISTRATION, redis_url=redis_url) as world:
        server = world.server

        async def verification(app: SimApp) -> bytes:
            return app.verification_code((await world.sim.next_push(app.device_token.token.decode(), 30.0)).body)

        load = Registrar("127.0.0.1", server.port, server.key_hash, smp.address,
                         lambda k: smp.create_queue(k)[0].notifier_id, verification)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(WORKERS, stop))
        try:
            await until(lambda: sum(len(p.subs) for p in load.promises) >= 30, timeout_s=30)
            await server.kill9()
            acked = len(load.promises)
            await server.start()
            back_s = await until(lambda: len(load.promises) >= acked + 20 + WORKERS, timeout_s=30)
        finally:
            stop.set()
            await running
        probe = await NtfClient.connect("127.0.0.1", server.port, server.key_hash)
        lost_tokens, lost_subs = await lost(probe, load.promises)
        await probe.close()
        acked_nids = {nid for p in load.promises for _, nid, _ in p.subs}
        resubscribed_s = await until(lambda: acked_nids <= set(smp.subscribed_queues()), timeout_s=30)
    print(f"server kill -9: {acked} tokens acknowledged before the kill, registering again {back_s:.2f} s after "
          f"the new process listened; lost {len(lost_tokens)} tokens, {len(lost_subs)} subscriptions; all "
          f"{len(acked_nids)} acknowledged subscriptions subscribed at the SMP server {resubscribed_s:.2f} s later")
    assert lost_tokens == [] and lost_subs == []
    log_watch.assert_clean()
