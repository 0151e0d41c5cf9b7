"""The supervisor: ``ntf-server start`` with ``[server] workers`` above 1 (README "Workers").

Theory of operation (hypercorn's ``serve`` is the model). The supervisor holds the state directory's lock, claims
the port (port.py: so a second instance on the same port fails to start; 0 = a free one), runs the embedded Redis
child when there is no ``[redis] url`` (and passes its URL to the workers), and starts the workers; each worker is
a whole server in its ``WorkerRole`` (role.py), one lease holder among the others (subscriber/leases.py), so the
SMP servers are shared out between workers the way they are between instances. Once every worker serves, it prints
worker 0's summary and runs one ``asyncio.TaskGroup``: one task per worker slot, the embedded Redis's supervision,
and the shutdown trigger (SIGTERM/SIGINT). A worker that dies is started again after a backoff (``[server]
worker_restart_s``, 1 s, doubling to 30 s, back to the first once a worker has run a minute), logged with its exit
status and counted; one that dies ``MAX_QUICK_FAILURES`` times in a row without running a minute stops the instance
(exit 1: the operator must look). On SIGTERM every worker is sent SIGTERM and drains (``wind_down``: its queued
pushes for up to ``[push] shutdown_grace_s``); one still running after ``stop_timeout_s`` is killed. Exit status: 0
when every worker stopped cleanly, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Final

from ntf_server.config import Config
from ntf_server.env import StartupError
from ntf_server.observability.logevents import log_event
from ntf_server.observability.logsetup import setup_logging
from ntf_server.server import EXIT_FAILED, OPERATOR_ERRORS, PARTS_STOP_TIMEOUT_S, PartFailed
from ntf_server.statelock import StateLock
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.supervisor.port import claim_port
from ntf_server.supervisor.processes import WorkerProcess, describe_exit
from ntf_server.supervisor.role import WorkerRole

log = logging.getLogger(__name__)

BACKOFF_MAX_S: Final = 30.0
STEADY_S: Final = 60.0  # a worker that ran this long before dying is restarted at once (backoff reset)
MAX_QUICK_FAILURES: Final = 5  # deaths in a row, each before STEADY_S: the worker cannot run; stop


def stop_timeout_s(config: Config) -> float:
    """How long a worker may take to stop: its listener, its parts, its push drain, and a margin."""
    return config.server.shutdown_timeout_s + config.push.shutdown_grace_s + 2 * PARTS_STOP_TIMEOUT_S + 5.0


class WorkerSlot:
    """Worker ``index``: its process now, and its restarts."""

    def __init__(self, config: Config, role: WorkerRole) -> None:
        self.config = config
        self.role = role
        self.process: WorkerProcess | None = None
        self.restarts = 0
        self.clean = True  # stopped with exit status 0 (or still running)
        self._announcing: asyncio.Task[None] | None = None  # waits for a restarted worker's announcement

    def __repr__(self) -> str:
        return f"<WorkerSlot {self.role.index} {self.process!r} restarts={self.restarts}>"

    async def spawn(self) -> WorkerProcess:
        self.process = await WorkerProcess.spawn(self.config.config_dir, self.role)
        return self.process

    async def keep(self, stop: asyncio.Event) -> None:
        """Keep the worker running until ``stop``; then stop it (also when cancelled)."""
        first = self.config.server.worker_restart_s
        backoff, quick = first, 0
        try:
            while True:
                assert self.process is not None
                began = time.monotonic()
                if not await self._exited_before(stop):
                    return
                status = self.process.proc.returncode
                assert status is not None
                steady = time.monotonic() - began >= STEADY_S
                backoff, quick = (first, 1) if steady else (backoff, quick + 1)
                self.restarts += 1
                if quick >= MAX_QUICK_FAILURES:
                    log_event(log, "supervisor.worker_failing", worker=self.role.index,
                              status=describe_exit(status), failures=quick)
                    raise PartFailed(f"worker {self.role.index} failed {quick} times in a row")
                log_event(log, "supervisor.worker_exited", worker=self.role.index, pid=self.process.pid,
                          status=describe_exit(status), delay_s=backoff, restarts=self.restarts)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                if stop.is_set():
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self.role = replace(self.role, restarts=self.restarts)
                await self.spawn()
                self._announce_restart()
        finally:
            await self.stop()

    async def _exited_before(self, stop: asyncio.Event) -> bool:
        assert self.process is not None
        exited = asyncio.create_task(self.process.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            exited.cancel()
        return self.process.proc.returncode is not None and not stop.is_set()

    def _announce_restart(self) -> None:
        process = self.process
        assert process is not None

        async def ready() -> None:
            if await process.ready() is not None:
                log_event(log, "supervisor.worker_started", worker=self.role.index, pid=process.pid)

        self._announcing = asyncio.get_running_loop().create_task(ready())  # an early death is logged by keep

    async def stop(self) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
        process = self.process
        if process is None:
            return
        timeout = stop_timeout_s(self.config)
        status, killed = await asyncio.shield(process.stop(timeout))
        self.clean = self.clean and status == 0
        if killed:
            log_event(log, "supervisor.worker_killed", worker=self.role.index, pid=process.pid, timeout_s=timeout)
        else:
            log_event(log, "supervisor.worker_stopped", worker=self.role.index, pid=process.pid,
                      status=describe_exit(status))


class Supervisor:
    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.slots: list[WorkerSlot] = []
        self.port = 0
        self.embedded: EmbeddedRedis | None = None

    def __repr__(self) -> str:
        return f"<Supervisor workers={self.workers} port={self.port} slots={self.slots!r}>"

    async def run(self, stop: asyncio.Event) -> bool:
        """Serve until ``stop`` (True when every worker then stopped cleanly); raises ``StartupError`` when a
        worker cannot start, ``PartFailed`` when one keeps dying or the embedded Redis fails."""
        cfg = self.config
        async with AsyncExitStack() as stack:
            stack.enter_context(StateLock(cfg.server.state_dir))
            claim = stack.enter_context(self._claim_port())  # before anything is started (port.py)
            self.port = int(claim.getsockname()[1])
            url = ""
            if not cfg.redis_url().strip():
                self.embedded = EmbeddedRedis(cfg.server.state_dir / "redis")  # the layout server.py uses
                stack.push_async_callback(self.embedded.stop)
                url = await self.embedded.start()
            self.slots = [WorkerSlot(cfg, WorkerRole(i, self.workers, self.port, url)) for i in range(self.workers)]
            summary = await self._start_all()
            log_event(log, "supervisor.started", workers=self.workers, port=self.port)
            print("\n".join(summary), flush=True)
            print(f"Workers: {self.workers} (supervisor pid {os.getpid()})", flush=True)
            print(f"Listening on port {self.port}. Stop with Ctrl-C.", flush=True)
            async with asyncio.TaskGroup() as tg:
                for slot in self.slots:
                    tg.create_task(slot.keep(stop), name=f"worker {slot.role.index}")
                if self.embedded is not None:
                    tg.create_task(self._embedded_redis(stop), name="embedded redis")
                await stop.wait()
                log_event(log, "supervisor.stopping", reason="signal")
                print("Shutting down...", flush=True)
        return all(slot.clean for slot in self.slots)

    def _claim_port(self) -> socket.socket:
        """The instance's claim on its NTF port, held until the supervisor ends: no other instance on this
        machine can then share it (port.py); the same one-line error as one process's listener."""
        s = self.config.server
        try:
            return claim_port(s.bind, s.port)
        except OSError as e:
            why = e.strerror or os.strerror(e.errno or 0)
            raise StartupError.cannot_listen(s.bind, s.port, why) from e

    async def _start_all(self) -> tuple[str, ...]:
        """Start every worker and wait until each serves; worker 0's summary. If one ends first, stop the
        others and fail with its exit status (its own error line is on stderr already)."""
        try:
            for slot in self.slots:
                await slot.spawn()
            ready = [await slot.process.ready() for slot in self.slots if slot.process is not None]
            failed = next((s for s, r in zip(self.slots, ready, strict=True) if r is None), None)
            if failed is None:
                summary = ready[0]
                assert summary is not None
                return summary.summary
            assert failed.process is not None
            status = describe_exit(await failed.process.wait())
            raise StartupError(f"worker {failed.role.index} could not start ({status})")
        except BaseException:
            await asyncio.gather(*(slot.stop() for slot in self.slots))
            raise

    async def _embedded_redis(self, stop: asyncio.Event) -> None:
        assert self.embedded is not None
        supervise = asyncio.create_task(self.embedded.supervise())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({supervise, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if supervise.done():
            supervise.result()  # raises what ended it
            raise PartFailed("embedded redis ended unexpectedly")
        supervise.cancel()


async def serve(config: Config, workers: int) -> bool:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Supervisor(config, workers).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(config: Config, workers: int) -> int:
    """Blocking entry point of ``ntf-server start`` with several workers; the exit status."""
    setup_logging(config.log)
    clean = False
    try:
        clean = asyncio.run(serve(config, workers))
    except* OPERATOR_ERRORS as group:
        print(f"ntf-server: {group.exceptions[0]}", file=sys.stderr, flush=True)
    return 0 if clean else EXIT_FAILED
