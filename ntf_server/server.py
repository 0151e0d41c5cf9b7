"""The server process: wires store, push service, handlers and the NTF listener (ntf_server/README.md "The parts").

Theory of operation (hypercorn's ``worker_serve`` is the model): resources — the state-directory lock,
the embedded Redis child, the store connection, the APNs client, the listener — are entered into one
``AsyncExitStack`` as they are created, so whatever was created is closed, in reverse order, however
start-up or the run ends. env.py builds them and declares the long-lived *parts* (push workers, the
subscriber pool, schedulers, housekeeping, the embedded Redis supervisor, the store's reconnect probe), each
with what it reports and how it stops; this module runs them in one ``asyncio.TaskGroup`` and knows none of
them by name. A part never returns: one that raises or returns ends the whole server with a
clear log line and a non-zero exit (systemd then restarts it), instead of the server carrying on without
it. Parts recover from what they can recover from themselves (the Redis supervisor restarts its child;
the store answers ``ERR STORE`` at once while Redis is away and reconnects in the background).

``NtfServer`` is the in-process form (tests and ``demo`` use it): ``start()``, ``wait()``, ``stop()``.
``run(config)`` is what ``ntf-server start`` calls: it serves until SIGTERM/SIGINT or until a part fails,
then shuts down in order (listener first, so no request is cut mid-way, then the parts, the APNs client,
the store, the embedded Redis child, and the lock last); ``serve_until`` is the same for a worker process
(supervisor/worker.py). Over 300 lines: the life of one server process (start, supervision, the ordered
stop, and the entry points that run it) reads best in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Final

from ntf_server import env as environment
from ntf_server.admin.app import AdminServer, build_app
from ntf_server.admin.auth import TokenError, clean_token
from ntf_server.admin.policy import PolicyApi
from ntf_server.admin.window import CounterWindow
from ntf_server.config import Config, ConfigError
from ntf_server.env import StartupError as StartupError  # raised here, and by env.py: one class
from ntf_server.maintenance import Housekeeping
from ntf_server.observability.apns_metrics import ApnsMetrics
from ntf_server.observability.logevents import log_event
from ntf_server.observability.logsetup import setup_logging
from ntf_server.observability.logsummary import flush_every
from ntf_server.observability.ownservers import OwnServers
from ntf_server.observability.redact import cap_third_party_loggers
from ntf_server.observability.startsummary import StartSummary, policy_text
from ntf_server.observability.stats import Stats
from ntf_server.push.pipeline import PushPipeline
from ntf_server.push.policy import PolicySettings
from ntf_server.statelock import AlreadyRunning, StateLock
from ntf_server.store.activity import ActivityStore
from ntf_server.store.census import CensusTaker
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.errors import StoreError
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.leases import LeaseManager
from ntf_server.subscriber.pool import SubscriberPool
from ntf_server.supervisor.role import WorkerRole
from ntf_server.transport import certs
from ntf_server.transport.certs import CredentialsError
from ntf_server.transport.listener import NtfListener
from ntf_server.transport.tls import TlsError

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S: Final = 60.0  # counted log summaries (logsummary.py) are written at least this often
EXIT_FAILED: Final = 1
PARTS_STOP_TIMEOUT_S: Final = 10.0

PartRun = Callable[[], Awaitable[None]]


class PartFailed(Exception):
    """A long-lived part of the server ended; the server stops (non-zero exit)."""


class NtfServer:
    def __init__(self, config: Config, role: WorkerRole | None = None) -> None:
        self.config = config
        self.role = role  # one worker of several (supervisor/); None: the only process of the instance
        self.stats = Stats(OwnServers(config.subscriber.own_server_domains))
        self.apns_metrics = ApnsMetrics()
        self._stack: AsyncExitStack | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._parts: dict[str, PartRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._embedded: EmbeddedRedis | None = None
        self._store: RedisStore | None = None
        self.housekeeping: Housekeeping | None = None
        self.listener: NtfListener | None = None
        self.push: PushPipeline | None = None
        self.pool: SubscriberPool | None = None
        self.leases: LeaseManager | None = None
        self.activity: ActivityStore | None = None
        self.census: CensusTaker | None = None
        self.admin: AdminServer | None = None
        self.started_at = 0.0  # Unix time of start() (uptime in the admin API)
        self.push_window: CounterWindow | None = None  # pushes in the last hour (admin/window.py)
        self.summary: StartSummary | None = None
        self.env: environment.Env | None = None  # every part, built from the config (env.py)

    def __repr__(self) -> str:
        parts = ",".join(self._parts) or "-"
        return f"<NtfServer parts={parts} {self.listener!r} {self.stats!r}>"

    @property
    def store(self) -> RedisStore:
        assert self._store is not None, "not started"
        return self._store

    @property
    def embedded_redis(self) -> EmbeddedRedis | None:
        return self._embedded

    @property
    def port(self) -> int:
        assert self.listener is not None, "not started"
        return self.listener.port

    def add_part(self, name: str, part: PartRun) -> None:
        """Register a long-lived part (before ``start``): it runs in the server's TaskGroup."""
        assert self._supervisor is None, "parts are added before start()"
        self._parts[name] = part

    async def start(self) -> None:
        """Create every resource and start every part; on any failure, close what was created."""
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def _start(self, stack: AsyncExitStack) -> None:
        cfg, role = self.config, self.role
        self.started_at = time.time()
        lock = StateLock(cfg.server.state_dir, role.lock_name) if role else StateLock(cfg.server.state_dir)
        stack.enter_context(lock)  # before anything touches the directory
        cap_third_party_loggers()  # also for in-process servers (tests, demo) that skip setup_logging
        env = self.env = await environment.build(cfg, role, self.stats, self.apns_metrics, stack)
        env.started_at = self.started_at
        self._store, self._embedded, self.push, self.pool = env.store, env.embedded, env.push, env.pool
        self.leases, self.housekeeping, self.activity = env.leases, env.housekeeping, env.activity
        self.listener, self.census, self.push_window = env.listener, env.census, env.window
        reports = env.reports()
        self._parts = {**{part.name: part.run for part in env.parts},
                       "log summaries": lambda: flush_every(reports, SUMMARY_INTERVAL_S), **self._parts}
        self._supervisor = asyncio.create_task(self._supervise(), name="ntf-server parts")
        stack.push_async_callback(self._stop_parts)
        s = cfg.server
        try:
            await self.listener.start(s.bind or None, role.port if role else s.port, reuse_port=role is not None)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's own strerror repeats the address
            raise StartupError.cannot_listen(s.bind, s.port, why) from e
        stack.push_async_callback(self.listener.stop)
        log_event(log, "listener.started", bind=s.bind or "*", port=self.listener.port)
        if environment.serves_admin(cfg, role):
            await self._start_admin(stack, env)
        self.summary = await self._summary()
        log_event(log, "server.started", **self.summary.fields())

    async def _summary(self) -> StartSummary:
        """The start-up summary (startsummary.py), with the push policy in force: stored or the config's."""
        cfg = self.config
        try:
            stored = await PolicyStore(self.store.dataset).get()
            policy = policy_text(stored.to_json(), "stored") if stored else policy_text(
                PolicySettings.from_config(cfg.push).to_json(), "config")
        except StoreError as e:  # a summary line is not worth failing start-up for
            policy = f"unknown ({type(e).__name__})"
        key_hash = certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file))
        admin_port = self.admin.port if self.admin else None
        return StartSummary.of(cfg, key_hash, policy, listen_port=self.port, admin_port=admin_port)

    async def _start_admin(self, stack: AsyncExitStack, env: environment.Env) -> None:
        """The admin HTTP API, after the listener (so /healthz is true once it answers), closed before it."""
        cfg = self.config.admin
        try:
            token = clean_token(cfg.token().read())
            read_token = clean_token(cfg.read_token().read()) if cfg.read_token().configured else None
        except (ConfigError, TokenError) as e:
            raise StartupError(f"admin API: {e}") from e
        policy = PolicyApi(PolicyStore(self.store.dataset),
                           PolicySettings.from_config(self.config.push))
        try:
            app = build_app(env.admin_sources(self.apns_metrics), policy, token, metrics_public=cfg.metrics_public,
                            read_token=read_token)
        except TokenError as e:
            raise StartupError(f"admin API: {e}") from e
        admin = AdminServer(app)
        try:
            await admin.start(cfg.bind, cfg.port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise StartupError(f"admin API: cannot listen on {cfg.bind}:{cfg.port}: {why}") from e
        stack.push_async_callback(admin.stop)
        self.admin = admin
        log_event(log, "admin.started", url=f"http://{cfg.bind}:{admin.port}")

    # ------------------------------------------------------------ parts

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for name, part in self._parts.items():
                self._tasks[name] = tg.create_task(self._run_part(name, part), name=name)

    async def _run_part(self, name: str, part: PartRun) -> None:
        try:
            await part()
        except Exception as e:
            # The exception text, not a traceback: our exceptions carry no secrets, and one line is what
            # an operator reads. The traceback goes to debug for developers.
            log_event(log, "server.part_failed", part=name, error=f"{type(e).__name__}: {e}")
            log.debug("%s failure", name, exc_info=True)
            raise PartFailed(f"{name} failed: {e}") from e
        log_event(log, "server.part_ended", part=name)
        raise PartFailed(f"{name} ended unexpectedly")

    async def wait(self) -> None:
        """Until a part fails (raises ``PartFailed``); parts never end on their own."""
        assert self._supervisor is not None, "not started"
        try:
            await asyncio.shield(self._supervisor)
        except* PartFailed as group:
            raise group.exceptions[0] from None

    async def _stop_parts(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=PARTS_STOP_TIMEOUT_S)
        if not done:  # a part that ignores its cancel must not keep the resources below from closing
            log_event(log, "server.parts_stuck", timeout_s=PARTS_STOP_TIMEOUT_S)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):  # failures were logged by _run_part
            await task

    async def stop(self) -> None:
        """Stop gracefully (``wind_down``), then close everything in reverse order of creation; safe to call
        twice and after a failure."""
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                await self.wind_down()
            finally:
                await stack.aclose()

    async def wind_down(self) -> None:
        """Nothing accepted is lost: stop taking new work (the NTF listener, then the parts that take work: the
        SMP reads, the schedulers that make pushes) and release what they held (the SMP leases), then let the
        parts that drain (the push pipeline: it stores what it accepted and sends what it queued) finish, for
        up to ``[push] shutdown_grace_s``; what is left stays in Redis for the next start (push/pipeline.py)."""
        if self.listener is not None:
            await self.listener.stop()
        parts = self.env.parts if self.env is not None else []
        taking = {part.name for part in parts if part.takes_work}
        stopping = [t for name, t in self._tasks.items() if name in taking and not t.done()]
        for t in stopping:
            t.cancel()
        if stopping:
            await asyncio.wait(stopping, timeout=PARTS_STOP_TIMEOUT_S)
        for part in parts:
            if part.release is not None:  # e.g. the SMP links are closed: others may take their servers at once
                await part.release()
        grace = self.config.push.shutdown_grace_s
        for part in parts:
            task = self._tasks.get(part.name)
            if part.drain is not None and task is not None and not task.done():
                log_event(log, "server.draining", grace_s=grace)
                await part.drain(grace)


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a part fails (raises ``PartFailed``)."""

    def announce(server: NtfServer) -> None:
        assert server.summary is not None
        print("\n".join(server.summary.lines()), flush=True)
        print(f"Listening on port {server.port}. Stop with Ctrl-C.", flush=True)
        if ready is not None:
            ready.set()

    await serve_until(NtfServer(config), announce, asyncio.Event())


async def serve_until(server: NtfServer, announce: Callable[[NtfServer], None], stop: asyncio.Event) -> None:
    """Start ``server``, ``announce`` it, serve until SIGTERM/SIGINT or ``stop`` (returns) or until a part
    fails (raises ``PartFailed``), then stop it gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        announce(server)
        failed = asyncio.create_task(server.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if failed.done():
            failed.result()  # raises PartFailed
        failed.cancel()
        log_event(log, "server.stopping", reason="signal")
        print("Shutting down...", flush=True)
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# What an operator can fix, reported as one line and exit status 1 (never a traceback).
OPERATOR_ERRORS: Final = (
    StartupError, AlreadyRunning, ConfigError, StoreError, CredentialsError, TlsError, PartFailed,
)


def run(config: Config) -> int:
    """Blocking entry point of ``ntf-server start``."""
    setup_logging(config.log)
    try:
        asyncio.run(serve(config))
    except OPERATOR_ERRORS as e:
        print(f"ntf-server: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0
