"""Scheduled work with two ``ntf-server start`` processes on one Redis (issue 18 "Everything scheduled runs
once"): deferred pushes, periodic pushes and retries are each sent exactly once while both instances live
(counted at the APNs simulator), and after kill -9 of one mid-work every push is still delivered, and none
twice except the pushes the dead one had at APNs, recorded there and not yet answered (the documented
at-least-once case: ntf_server/README.md "Stops and crashes"); token expiry and the census run in one
instance at a time and move to the other when it is killed.

Each test runs one phase with both alive, then one where an instance is killed while the simulator holds
its answers (``response_delay_s``), so the kill lands mid-send. A push is identified by its device and its
last notification (the cause of a message push, the newest of a deferred one), or by its round (periodic).
Waits are on what the simulator recorded and on Redis (nothing due, nothing claimed), never fixed sleeps."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from instances import Device, Pair, two_instances, until, verification_free

from ntf_server.protocol import ntf as P
from ntf_server.sim.device import NtfClient
from ntf_server.sim.smp_server import SmpServerStandIn

DEVICES = 10
APNS_DELAY_S = 0.5  # the simulator's answer delay in the kill phase: pushes at APNs when the kill lands
CLAIM_S = 2.0  # [push] claim_lease_s here: above APNS_DELAY_S, as the setting's doc requires
ACK_WINDOW_S = 0.5  # an answer's acknowledgement (batched 10 ms: push/pipeline.py) and the kill's delivery


def last_ids(pair: Pair, devices: list[Device], skip: dict[str, int]) -> Counter[tuple[int, bytes]]:
    """(device, last notification) of every message-carrying push after the first ``skip[device]`` ones."""
    out: Counter[tuple[int, bytes]] = Counter()
    for i, d in enumerate(devices):
        for body in verification_free(pair.pushes(d))[skip.get(d.token, 0):]:
            if ids := d.message_ids(body):
                out[(i, ids[-1])] += 1
    return out


def delivered(pair: Pair, devices: list[Device], skip: dict[str, int]) -> set[tuple[int, bytes]]:
    """(device, message id) of every notification any push after the first ``skip`` carried."""
    return {(i, m) for i, d in enumerate(devices) for body in verification_free(pair.pushes(d))[skip.get(d.token, 0):]
            for m in d.message_ids(body)}


def counts(pair: Pair, devices: list[Device]) -> dict[str, int]:
    return {d.token: len(verification_free(pair.pushes(d))) for d in devices}


async def kill_mid_send(pair: Pair, ready: object) -> tuple[str, int]:
    """kill -9 of instance "a" once ``ready`` holds (the simulator holding answers); returns the bound on
    pushes sent twice: those in flight at the kill, i.e. recorded at APNs (delivered, for the device) within
    one answer delay + ``ACK_WINDOW_S`` before it: not answered yet, or answered and not yet acknowledged."""
    await until(ready, 30, "work in flight")  # type: ignore[arg-type]
    killed_at = time.time()
    await pair.a.kill9()
    pair.sim.faults.response_delay_s = 0.0
    since = killed_at - APNS_DELAY_S - ACK_WINDOW_S
    in_flight = sum(1 for p in pair.sim.all_pushes() if p.received_at > since and b'"verification"' not in p.body)
    return "a", in_flight


async def test_deferred_pushes_once_while_both_live_and_none_lost_on_kill_9(
        tmp_path: Path, redis_url: str, make_server: object) -> None:
    settings = {("push", "hidden_per_hour"): 3600.0, ("push", "burst"): 1, ("push", "overflow"): "defer",
                ("push", "claim_lease_s"): CLAIM_S}
    async with two_instances(tmp_path, redis_url, settings) as pair:
        stand_ins: list[SmpServerStandIn] = [await make_server() for _ in range(2)]  # type: ignore[operator]
        devices = await pair.register(DEVICES, stand_ins, queues=2)

        # both alive: two notifications at once; the first pushed at once, the second over the budget,
        # deferred one second and claimed by one of the two schedulers: two pushes per device, never three
        for i, d in enumerate(devices):
            for j, (smp, creds) in enumerate(d.queues):
                smp.notify(creds.notifier_id, b"x%d-%02d" % (j, i), 1_700_000_001)
        await until(lambda: all(n >= 2 for n in counts(pair, devices).values()), 30, "two pushes each")
        await until(pair.idle, 30, "nothing due")
        assert set(counts(pair, devices).values()) == {2}
        assert delivered(pair, devices, {}) == {(i, b"x%d-%02d" % (j, i)) for i in range(DEVICES) for j in range(2)}

        # kill -9 of one while both schedulers and the message pushes are mid-send
        skip = counts(pair, devices)
        before = await pair.last_notices(devices)
        pair.sim.faults.response_delay_s = APNS_DELAY_S
        for i, d in enumerate(devices):
            for j, (smp, creds) in enumerate(d.queues):
                smp.notify(creds.notifier_id, b"y%d-%02d" % (j, i), 1_700_000_002)

        async def stored_and_deferring() -> bool:
            now = await pair.last_notices(devices)
            every = all(set(now[i].values()).isdisjoint(before[i].values()) for i in range(DEVICES))
            deferred_sent = any((i, b"y1-%02d" % i) in last_ids(pair, devices, skip) for i in range(DEVICES))
            return every and deferred_sent and pair.in_flight() > 0

        dead, in_flight = await kill_mid_send(pair, stored_and_deferring)
        expected = {(i, b"y%d-%02d" % (j, i)) for i in range(DEVICES) for j in range(2)}
        await until(lambda: expected <= delivered(pair, devices, skip), 60, "every notification delivered")
        await until(pair.idle, 30, "nothing due")
        twice = sum(n - 1 for n in last_ids(pair, devices, skip).values())
        assert twice <= in_flight, (twice, in_flight)
        assert pair.errors() == []
    print(f"deferred: {2 * DEVICES} pushes once each with both alive; after kill -9 of {dead} with {in_flight} "
          f"pushes in flight (either instance's): all {len(expected)} notifications delivered, "
          f"{twice} pushes sent twice")


async def test_periodic_pushes_once_while_both_live_and_none_lost_on_kill_9(tmp_path: Path, redis_url: str) -> None:
    """Parity mode, where no budget records a periodic push (two instances each sent one before claims)."""
    settings = {("push", "hidden_per_hour"): 0.0, ("push", "claim_lease_s"): CLAIM_S}
    async with two_instances(tmp_path, redis_url, settings) as pair:
        devices = await pair.register(DEVICES, [])
        client = await NtfClient.connect("127.0.0.1", pair.a.port, pair.a.key_hash)
        for d in devices:
            assert await d.app.token_command(client, P.TCrn(20)) == P.Ok()
        await client.close()

        def periodic(d: Device) -> int:
            return len(pair.pushes(d, b'"checkMessages"'))

        async def fall_due() -> None:
            """As if the 20 minutes had passed: the token is due and its last periodic push that long ago."""
            for d in devices:
                await pair.r.hset(pair.token_key(d), "cs", int(time.time()) - 20 * 60 - 5)
                await pair.r.zadd(pair.prefix + "cron", {d.app.token_id: 0})

        async def settled() -> bool:
            due = await pair.r.zcount(pair.prefix + "cron", "-inf", time.time())
            claims = [k async for k in pair.r.scan_iter(pair.prefix + "t{*}:crc")]
            return due == 0 and not claims

        await fall_due()
        await until(lambda: all(periodic(d) >= 1 for d in devices), 30, "a periodic push each")
        await until(settled, 30, "rescheduled")
        assert [periodic(d) for d in devices] == [1] * DEVICES

        pair.sim.faults.response_delay_s = APNS_DELAY_S
        await fall_due()
        dead, in_flight = await kill_mid_send(
            pair, lambda: any(periodic(d) >= 2 for d in devices) and pair.in_flight() > 0)
        await until(lambda: all(periodic(d) >= 2 for d in devices), 60, "the second periodic push each")
        await until(settled, 30, "rescheduled")
        twice = sum(periodic(d) - 2 for d in devices)
        assert twice <= in_flight, (twice, in_flight)
        assert pair.errors() == []
    print(f"periodic: {DEVICES} pushes once each with both alive; after kill -9 of {dead} with {in_flight} "
          f"pushes in flight (either instance's): {DEVICES} delivered, {twice} sent twice")


async def test_retries_once_while_both_live_and_none_lost_on_kill_9(
        tmp_path: Path, redis_url: str, make_server: object) -> None:
    settings = {("push", "hidden_per_hour"): 0.0, ("push", "claim_lease_s"): CLAIM_S,
                ("push", "retry_backoff_base_s"): 0.1, ("push", "retry_backoff_cap_s"): 0.25}  # a retry's tail short
    async with two_instances(tmp_path, redis_url, settings) as pair:
        stand_ins: list[SmpServerStandIn] = [await make_server() for _ in range(2)]  # type: ignore[operator]
        devices = await pair.register(DEVICES, stand_ins)
        pair.sim.faults.error_rates = {429: 0.4, 503: 0.3}  # most pushes are retried, some several times

        for i, d in enumerate(devices):
            smp, creds = d.queues[0]
            smp.notify(creds.notifier_id, b"r-%02d" % i, 1_700_000_001)
        await until(lambda: all(n >= 1 for n in counts(pair, devices).values()), 60, "a push each")
        await until(pair.idle, 30, "no retry waiting")
        retried = pair.sim.replies.get("TooManyRequests", 0) + pair.sim.replies.get("ServiceUnavailable", 0)
        assert retried > 0 and set(counts(pair, devices).values()) == {1}
        assert last_ids(pair, devices, {}) == {(i, b"r-%02d" % i): 1 for i in range(DEVICES)}

        skip = counts(pair, devices)
        before = await pair.last_notices(devices)
        pair.sim.faults.response_delay_s = APNS_DELAY_S
        for i, d in enumerate(devices):
            smp, creds = d.queues[0]
            smp.notify(creds.notifier_id, b"k-%02d" % i, 1_700_000_002)

        async def stored_and_retrying() -> bool:
            now = await pair.last_notices(devices)
            every = all(now[i] != before[i] for i in range(DEVICES))
            return every and await pair.r.hlen(pair.prefix + "ob:a") > 0 and pair.in_flight() > 0

        dead, in_flight = await kill_mid_send(pair, stored_and_retrying)
        expected = {(i, b"k-%02d" % i) for i in range(DEVICES)}
        await until(lambda: expected <= set(last_ids(pair, devices, skip)), 60, "every notification pushed")
        await until(pair.idle, 30, "no retry waiting")
        twice = sum(n - 1 for n in last_ids(pair, devices, skip).values())
        assert twice <= in_flight, (twice, in_flight)
        assert pair.errors() == []
    print(f"retries ({retried} answers 429/503): {DEVICES} pushes once each with both alive; after kill -9 of {dead} "
          f"with {in_flight} pushes in flight (either instance's): all {DEVICES} delivered, {twice} sent twice")


async def test_expiry_and_census_run_in_one_instance_and_move_on_kill_9(tmp_path: Path, redis_url: str) -> None:
    async with two_instances(tmp_path, redis_url, {}) as pair:
        jobs = ("token expiry", "census")
        await until(lambda: _all_held(pair, jobs), 30, "both jobs held")
        holders = {job: await pair.job_holder(job) for job in jobs}
        await until(lambda: _exists(pair, "census"), 30, "a census published")
        victim = holders["census"]
        assert victim is not None
        killed_at = time.time()
        await pair.process(victim).kill9()
        other = "b" if victim == "a" else "a"

        async def moved() -> bool:
            return all([await pair.job_holder(job) == other for job in jobs])

        took = await until(moved, 30, "the jobs taken over")
        await until(lambda: _census_after(pair, killed_at), 30, "a census by the other")
        log = (tmp_path / f"{other}.log").read_text()
        assert log.count("event=jobs.lease_taken") >= sum(h == victim for h in holders.values())
        assert pair.errors() == []
    print(f"expiry and census held by {holders}; kill -9 of {victim}: both held by {other} {took:.2f} s later")


async def _all_held(pair: Pair, jobs: tuple[str, ...]) -> bool:
    return all([await pair.job_holder(job) is not None for job in jobs])


async def _exists(pair: Pair, key: str) -> bool:
    return bool(await pair.r.exists(pair.prefix + key))


async def _census_after(pair: Pair, t: float) -> bool:
    raw = await pair.r.get(pair.prefix + "census")
    return raw is not None and float(json.loads(raw)["finished_at"]) > t
