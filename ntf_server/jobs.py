"""Jobs that run once per data set (token expiry, the census): one instance at a time, by a lease in Redis.

Theory of operation: every instance on one data set runs a ``LeasedJob`` for each such job, and each one
asks for the job's lease (store/leases.py ``lj:<job>``: set-if-absent with expiry, a fencing token from the
counter the SMP servers' leases use) every ``renew_s``. The holder renews it at that pace, also while the
job runs, and runs the job at once when it takes the lease, then every ``interval_s``; the others only ask
(and may ``follow`` the holder's results, as the census does). A holder that dies (kill -9) stops renewing:
after ``ttl_s`` the lease expires and the next ask of another instance takes it, and runs the job at once,
since the dead one may have died mid-run. A holder that finds its lease gone (it was paused or cut off from
Redis longer than ``ttl_s``) cancels its run at once: its successor runs the job now. A graceful stop
releases the lease, so another instance takes it within one ``renew_s``.

Two runs can only overlap while a paused holder has not yet noticed that it lost its lease (at most one
``renew_s``). Both jobs tolerate that: token expiry deletes in atomic batches (a token deleted twice is
deleted once), and the census only counts (its result is written fenced: store/census_shared.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ntf_server.observability.logevents import log_event
from ntf_server.store.census import Census
from ntf_server.store.census_shared import JOB as CENSUS_JOB, SharedCensus
from ntf_server.store.errors import StoreError
from ntf_server.store.leases import EXPIRY_JOB, NO_LEASE

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S: Final = 2.0  # a graceful stop does not wait longer for Redis to take the lease back

Job = Callable[[int], Coroutine[Any, Any, None]]  # one run, given the fencing token it runs under
Follow = Callable[[], Awaitable[None]]


class JobLeaseStore(Protocol):
    async def hold_job(self, job: str, instance: str, ttl_s: float, token: int = NO_LEASE) -> int | None: ...
    async def release_job(self, job: str, instance: str, token: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class JobTiming:
    interval_s: float  # a run every this long, on the holder
    ttl_s: float  # the lease expires this long after its last renewal (the takeover time after kill -9)
    renew_s: float  # the holder renews, the others ask, this often


class LeasedJob:
    def __init__(self, name: str, leases: JobLeaseStore, instance: str, job: Job, timing: JobTiming, *,
                 follow: Follow | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._leases = leases
        self._instance = instance
        self._job = job
        self._t = timing
        self._follow = follow
        self._clock = clock
        self.token = NO_LEASE  # the fencing token while this instance holds the lease
        self.runs = 0  # runs finished here (tests, status)

    def __repr__(self) -> str:
        return f"<LeasedJob {self.name} {'held' if self.token else 'not held'} runs={self.runs}>"

    @property
    def held(self) -> bool:
        return self.token != NO_LEASE

    async def run(self) -> None:
        """A long-lived server part: never returns; releases the lease when cancelled (graceful stop)."""
        next_run = 0.0
        try:
            while True:
                if await self._hold() == "taken":
                    next_run = self._clock()  # the last holder may have died mid-run
                if self.held and self._clock() >= next_run:
                    finished = await self._run_once()
                    next_run = self._clock() + (self._t.interval_s if finished else 0.0)
                elif not self.held and self._follow is not None:
                    with contextlib.suppress(StoreError):
                        await self._follow()
                wait = self._t.renew_s if not self.held else min(self._t.renew_s, next_run - self._clock())
                await asyncio.sleep(max(wait, 0.0))
        except asyncio.CancelledError:
            await self._release()
            raise

    async def _hold(self) -> str:
        """Ask for (or renew) the lease: "taken" (now ours), "kept", "lost", "other" or "error"."""
        try:
            got = await self._leases.hold_job(self.name, self._instance, self._t.ttl_s, self.token)
        except StoreError:
            return "error"  # keep the token: a renewal later proves (or disproves) it is still ours
        before, self.token = self.token, got or NO_LEASE
        if got is not None and got == before:
            return "kept"
        if got is not None:
            if before != NO_LEASE:  # it expired and was taken again by us: someone may have run meanwhile
                log_event(log, "jobs.lease_lost", job=self.name)
            log_event(log, "jobs.lease_taken", job=self.name)
            return "taken"
        if before != NO_LEASE:
            log_event(log, "jobs.lease_lost", job=self.name)
            return "lost"
        return "other"

    async def _run_once(self) -> bool:
        """One run, renewing the lease meanwhile; cancelled as soon as a renewal finds it gone (False)."""
        run = asyncio.create_task(self._job(self.token), name=f"job {self.name}")
        try:
            while True:
                done, _ = await asyncio.wait({run}, timeout=self._t.renew_s)
                if done:
                    break
                if await self._hold() in ("lost", "taken"):
                    run.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await run
                    return False
        except asyncio.CancelledError:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            raise
        try:
            run.result()
            self.runs += 1
        except StoreError as e:  # Redis away: the next interval tries again (the health probe reports it)
            log_event(log, "jobs.run_failed", job=self.name, error=type(e).__name__)
        return True

    async def _release(self) -> None:
        token, self.token = self.token, NO_LEASE
        if token == NO_LEASE:
            return
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self._leases.release_job(self.name, self._instance, token)


class Expiry(Protocol):
    async def expire_once(self, now: float | None = None) -> int: ...


class CensusTake(Protocol):
    latest: Census | None

    async def take(self) -> Census: ...


def expiry_job(housekeeping: Expiry, leases: JobLeaseStore, instance: str, timing: JobTiming) -> LeasedJob:
    """Token expiry (maintenance.py), by one instance of the data set at a time."""
    async def run(token: int) -> None:
        await housekeeping.expire_once()
    return LeasedJob(EXPIRY_JOB, leases, instance, run, timing)


def census_job(taker: CensusTake, shared: SharedCensus, leases: JobLeaseStore, instance: str,
               timing: JobTiming) -> LeasedJob:
    """The census (store/census.py), taken by one instance of the data set at a time and published
    (store/census_shared.py); the others show the published one."""
    async def run(token: int) -> None:
        taker.latest = await taker.take()
        await shared.publish(taker.latest, token, instance)

    async def follow() -> None:
        if (latest := await shared.latest()) is not None:
            taker.latest = latest
    return LeasedJob(CENSUS_JOB, leases, instance, run, timing, follow=follow)
