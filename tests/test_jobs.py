"""Jobs run once per data set (ntf_server/jobs.py) against the real Redis: the job lease (store/leases.py
``lj:<job>``) is held by one instance at a time, fenced, and taken over after its holder stops renewing; the
census is published only by the holder and read by the others (store/census_shared.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from helpers.store_helpers import job_holder

from ntf_server.jobs import JobTiming, LeasedJob, census_job
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.census import Census
from ntf_server.store.census_shared import SharedCensus
from ntf_server.store.leases import CENSUS_JOB, EXPIRY_JOB
from ntf_server.store.redis import RedisStore

TIMING = JobTiming(interval_s=3600, ttl_s=0.6, renew_s=0.1)


async def test_job_lease_is_held_by_one_fenced_and_released(store: RedisStore, second_store: RedisStore) -> None:
    a = await store.leases.hold_job("j", "A", 10)
    assert a is not None
    assert await second_store.leases.hold_job("j", "B", 10) is None  # held by A
    assert await store.leases.hold_job("j", "A", 10, a) == a  # renewed by its holder
    assert await store.leases.hold_job("j", "A", 10, a + 1000) is None  # a wrong fence renews nothing
    assert await job_holder(store, "j") == "A"
    assert not await second_store.leases.release_job("j", "B", a)  # only the holder releases
    assert await store.leases.release_job("j", "A", a)
    b = await second_store.leases.hold_job("j", "B", 10)
    assert b is not None and b > a  # a later holder always has a greater token
    assert not await store.leases.release_job("j", "A", a)  # the old holder cannot release its successor's


async def test_a_restart_on_the_dead_ones_state_directory_frees_its_job_leases(
        store: RedisStore, second_store: RedisStore) -> None:
    assert await store.leases.hold_job(EXPIRY_JOB, "A", 60) is not None
    assert await store.leases.hold_job(CENSUS_JOB, "B", 60) is not None
    await second_store.leases.release_instance("A")  # A's successor, which the state lock proves A is gone
    assert await job_holder(store, EXPIRY_JOB) is None
    assert await job_holder(store, CENSUS_JOB) == "B"  # another live instance's stays


def recording(name: str, runs: list[str], started: asyncio.Event | None = None,
              hang: bool = False) -> Callable[[int], object]:
    async def job(token: int) -> None:
        runs.append(name)
        if started is not None:
            started.set()
        if hang:
            await asyncio.Event().wait()
    return job


async def wait_for(check: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - two jobs in one loop, polled as the instances would be
            await asyncio.sleep(0.02)


async def test_one_runs_the_job_and_the_other_takes_over_when_it_dies(
        store: RedisStore, second_store: RedisStore) -> None:
    runs: list[str] = []
    hung = asyncio.Event()
    a = LeasedJob("expiry", store.leases, "A", recording("A", runs, hung, hang=True), TIMING)  # type: ignore[arg-type]
    b = LeasedJob("expiry", second_store.leases, "B", recording("B", runs), TIMING)  # type: ignore[arg-type]
    ta = asyncio.create_task(a.run())
    await hung.wait()  # A took the lease and is mid-run
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(3 * TIMING.ttl_s)  # B asks many times meanwhile: A renews while it runs
    assert runs == ["A"] and a.held and not b.held
    # A "dies" mid-run: it stops renewing and never releases (what kill -9 leaves behind)
    a._release = _no_release  # type: ignore[method-assign]
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    await wait_for(lambda: runs == ["A", "B"])  # B took it after the lease expired and ran at once
    assert b.held and await job_holder(store, "expiry") == "B"
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)
    assert await job_holder(store, "expiry") is None  # a graceful stop releases it


async def _no_release() -> None:
    return None


async def test_a_holder_that_lost_its_lease_cancels_its_run(store: RedisStore, second_store: RedisStore) -> None:
    started = asyncio.Event()
    a = LeasedJob("census", store.leases, "A", recording("A", [], started, hang=True), TIMING)  # type: ignore[arg-type]
    ta = asyncio.create_task(a.run())
    await started.wait()
    # as if A had been paused longer than the lease: another instance holds it now
    await store.client.delete(store.prefix + "lj:census")
    assert await second_store.leases.hold_job("census", "B", 60) is not None
    await wait_for(lambda: not a.held)
    assert a.runs == 0  # its run was cancelled, not finished
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    assert await job_holder(store, "census") == "B"  # A's stop did not release B's lease


async def test_the_census_is_taken_by_the_holder_and_shown_by_the_others(
        store: RedisStore, second_store: RedisStore) -> None:
    takers = [s.census_taker(duty=1.0) for s in (store, second_store)]
    jobs = [census_job(t, SharedCensus(s.dataset), s.leases, name, TIMING)
            for t, s, name in zip(takers, (store, second_store), "AB", strict=True)]
    tasks = [asyncio.create_task(jobs[0].run())]
    await wait_for(lambda: jobs[0].runs == 1)
    tasks.append(asyncio.create_task(jobs[1].run()))
    await wait_for(lambda: takers[1].latest is not None)
    assert jobs[1].runs == 0 and takers[1].latest == takers[0].latest  # shown, not taken again
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # a census written by a former holder is refused
    shared = SharedCensus(store.dataset)
    assert takers[0].latest is not None
    assert not await shared.publish(takers[0].latest, 1, "A")


def test_a_census_round_trips_through_its_shared_form() -> None:
    from ntf_server.store.census_shared import decode, encode
    server = SMPServer(("smp.example.org",), "5223", bytes(32))
    c = Census({"ACTIVE": 2}, {"NEW": 1}, {server: {"NEW": 1}}, 1.5, 0.25)
    assert decode(encode(c).encode()) == c
    assert decode(b"{not json") is None
