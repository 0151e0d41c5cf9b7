"""The environment: every part of one server process, built from the config (ntf_server/README.md "The
parts"; simplexmq's ``Env``, src/Simplex/Messaging/Notifications/Server/Env.hs, is the model).

Theory of operation. ``build`` creates the resources (store connection, APNs client, the embedded Redis
when the process owns it) and enters each into the caller's ``AsyncExitStack`` as it is created, then the
components over them, and returns an ``Env``. Each long-lived component is declared once, where it is
built, as a ``Part``: how it runs, which counted log lines it reports (logsummary.py), whether it takes new
work (stopped first at shutdown) and how it finishes (released or drained). server.py knows no particular
part: it runs ``env.parts``, flushes ``env.reports()`` and gives ``env.admin_sources()`` to the admin API,
so a new part is one ``Part(...)`` here and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from apns.client import App
from apns.jwt import ProviderKey
from apns.pool import Endpoint
from ntf_server.admin.figures import Sources, StoreView
from ntf_server.admin.status import sample_every
from ntf_server.admin.window import CounterWindow, push_counter_names
from ntf_server.admin.workers import InstanceView, LocalFigures, WorkerFiguresServer, WorkerPeers, socket_path
from ntf_server.config import Config, ConfigError, redact_url
from ntf_server.handlers import HandlerLimits, NtfHandlers
from ntf_server.jobs import JobTiming, census_job, expiry_job
from ntf_server.maintenance import EXPIRY_INTERVAL_S, Housekeeping
from ntf_server.observability.apns_metrics import ApnsMetrics
from ntf_server.observability.logevents import log_event
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto
from ntf_server.push.apns_sender import ApnsSender
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.cron import CronPushes
from ntf_server.push.deferred import DeferredScheduler
from ntf_server.push.model import PipelineSettings
from ntf_server.push.pipeline import HOUR_S, PushPipeline
from ntf_server.push.policy import PolicySettings
from ntf_server.store.activity import ActivityStore
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.census import CensusTaker
from ntf_server.store.census_shared import SharedCensus
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.errors import StoreError
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore
from ntf_server.store.sub_aliases import SubIdAliases
from ntf_server.store.vrfcap import VerificationCap
from ntf_server.subscriber.lease_plan import LeaseSettings
from ntf_server.subscriber.leases import LEASE_INSTANCE_FILE, LeaseManager, instance_ids
from ntf_server.subscriber.pool import SubscriberPool
from ntf_server.subscriber.routing import client_factory as smp_client_factory
from ntf_server.supervisor.role import WorkerRole
from ntf_server.transport import certs
from ntf_server.transport.listener import ListenerLimits, NtfListener
from ntf_server.transport.ntf_connection import ServerIdentity
from ntf_server.transport.quota import FrontDoor
from ntf_server.transport.tls import server_context

log = logging.getLogger(__name__)

# Request retries on one Redis connection error: one retry on a fresh connection covers a pooled
# connection that a Redis restart closed; an outage beyond that is the health switch's job.
STORE_RETRIES: Final = 1
# Redis connections: the push pipeline's (PipelineSettings.redis_connections) and REDIS_RESERVED for the rest
# (NTF handlers, the subscriber pool's status writes, schedulers, admin, health), checked at start.
REDIS_POOL: Final = 64
REDIS_RESERVED: Final = 40


class StartupError(Exception):
    """The server cannot start for a reason the operator must fix; the message says which."""

    @classmethod
    def cannot_listen(cls, bind: str, port: int, why: str) -> StartupError:
        """The NTF port cannot be had (one process's listener, or the supervisor's claim: the same line)."""
        return cls(f"cannot listen on {bind or '*'}:{port}: {why}")


@dataclass(frozen=True)
class Part:
    """A long-lived part of the server: it runs in the server's TaskGroup and never returns."""

    name: str
    run: Callable[[], Awaitable[None]]
    reports: tuple[CountedLog, ...] = ()  # its counted log lines, flushed every minute
    takes_work: bool = False  # makes new work: stopped first at shutdown, before the drain
    release: Callable[[], Awaitable[None]] | None = None  # once stopped (takes_work): give back what it held
    drain: Callable[[float], Awaitable[object]] | None = None  # after the others stopped: finish, within a grace


@dataclass
class Env:
    config: Config
    role: WorkerRole | None
    stats: Stats
    store: RedisStore
    embedded: EmbeddedRedis | None
    push: PushPipeline
    pool: SubscriberPool
    leases: LeaseManager
    housekeeping: Housekeeping
    activity: ActivityStore
    listener: NtfListener
    parts: list[Part]
    front_reports: tuple[CountedLog, ...]  # counted log lines of the NTF side (no part of its own)
    census: CensusTaker | None = None
    window: CounterWindow | None = None
    instance_view: InstanceView | None = None  # worker 0 of several: the admin API's sums
    started_at: float = field(default_factory=time.time)

    def reports(self) -> list[CountedLog]:
        return [*self.front_reports, *(r for part in self.parts for r in part.reports)]

    def admin_sources(self, apns: ApnsMetrics) -> Sources:
        census, push = self.census, self.push
        assert census is not None, "the admin API's parts run where it is served"
        return Sources(self.stats, apns, StoreView(self.store), self.pool, self.listener,
                       lambda: push.queue_length, lambda: census.latest, self.activity.counts, self.stats.own,
                       self.started_at, self.window, self.instance_view)


def load_sign_key(path: Path) -> crypto.SignPrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, crypto.SignPrivateKey):
        raise ConfigError(f"tls.key_file: {path} is not an Ed25519 or Ed448 key")
    return key


def apns_apps(config: Config) -> dict[str, App]:
    """One APNs app per enabled environment, named as ``ApnsSender.APP_NAMES`` expects."""
    apps = {}
    for name, env in config.apns_environments():
        if env.enabled:
            key = ProviderKey(env.key(f"apns.{name}").read(), env.key_id, env.team_id)
            ca = str(env.ca_file) if env.ca_file else None
            apps[name] = App(Endpoint(env.host, env.port, ca_file=ca), key, env.topic)
    return apps


def serves_admin(config: Config, role: WorkerRole | None) -> bool:
    """The admin API is on, and this is the process that serves it (worker 0 with several workers)."""
    return config.admin.enabled and (role is None or role.serves_admin)


async def _redis(config: Config, role: WorkerRole | None,
                 stack: AsyncExitStack) -> tuple[RedisStore, EmbeddedRedis | None]:
    embedded = None
    url = role.redis_url if role is not None and role.redis_url else config.redis_url().strip()
    if not url:  # <state_dir>/redis/redis/: the layout of the first release, kept so upgrades find their data
        embedded = EmbeddedRedis(config.server.state_dir / "redis")
        stack.push_async_callback(embedded.stop)
        url = await embedded.start()
    master = load_or_create_store_key(config.store.key_file)
    try:
        store = await RedisStore.connect(url, master, prefix=config.redis.key_prefix, retries=STORE_RETRIES,
                                         max_connections=REDIS_POOL, cluster=config.redis.cluster,
                                         shards=config.redis.shards)
    except StoreError as e:
        raise StartupError(f"cannot use Redis at {redact_url(url)}: {e}") from e
    stack.push_async_callback(store.close)
    for advice in await store.config_advice():
        log_event(log, "redis.config_advice", advice=advice)
    return store, embedded


async def build(config: Config, role: WorkerRole | None, stats: Stats, apns: ApnsMetrics,
                stack: AsyncExitStack) -> Env:
    """Every resource (entered into ``stack``) and every part of one server process."""
    cfg = config
    store, embedded = await _redis(cfg, role, stack)
    sender = ApnsSender.for_apps(apns_apps(cfg), observer=apns.observe)
    stack.push_async_callback(sender.aclose)
    hidden = HiddenPushes(PolicyStore(store.dataset),
                          PolicySettings.from_config(cfg.push), store.budgets())
    vrf_cap = VerificationCap(store.dataset, partial(store.dataset.a.index, b"vrf cap"),
                              cfg.push.verifications_per_hour, HOUR_S)  # in Redis: survives restarts
    # active tokens are counted by a keyed hash whose key derives from the store key (store/activity.py)
    activity = ActivityStore(store.dataset, store.dataset.a.index(b"active tokens", length=32))
    settings = PipelineSettings.of(cfg.push)
    try:
        settings.check(REDIS_POOL, REDIS_RESERVED)
    except ValueError as e:
        raise StartupError(str(e)) from e
    push = PushPipeline(store, sender, stats, hidden, settings=settings, on_stored=activity.record, vrf_cap=vrf_cap)
    deferred = DeferredScheduler(hidden, store, push.submit, stats, scan_s=cfg.push.defer_scan_s,
                                 lease_s=cfg.push.claim_lease_s)
    cron = CronPushes(hidden, store, push.submit, stats, scan_s=cfg.push.cron_scan_s, lease_s=cfg.push.claim_lease_s)
    sc = cfg.subscriber  # each SMP server is subscribed by the one instance (or worker) holding its lease
    identity_file = role.instance_file if role else LEASE_INSTANCE_FILE
    instance, predecessor = instance_ids(cfg.server.state_dir / identity_file)
    leases = LeaseManager(store.leases, store.get_subscription,
                          LeaseSettings(sc.lease_ttl_s, sc.lease_renew_s, grace_s=sc.lease_ttl_s),
                          instance=instance, predecessor=predecessor)
    pool = SubscriberPool(store, push, stats, serves=leases.holds, fence=leases.fence,
                          client_factory=smp_client_factory(cfg.subscriber), services=sc.use_service_credentials)
    leases.attach(pool)
    await leases.round()  # the servers free now, before the pool's start-up resubscription counts them
    sink = leases  # SNEW subscribes (or hands off to the owner), SDEL/TDEL/expiry forget
    aliases = SubIdAliases(*store.datasets)  # ids of an imported server
    await aliases.load()
    handlers = NtfHandlers(store, push, stats, sink, pushable=sender.pushable, resolve_sub_id=aliases.resolve,
                           limits=HandlerLimits.of(cfg))
    housekeeping = Housekeeping(store, sink, stats, expire_after_days=cfg.store.expire_tokens_after_days,
                                expire_unverified_after_h=cfg.store.expire_unverified_after_h)
    quotas = FrontDoor.from_config(cfg.registration, cfg.server, stats)
    listener = _listener(cfg, handlers, stats, quotas)
    parts = [
        Part("push pipeline", push.run, tuple(push.summary_logs), drain=push.drain),
        Part("subscriber pool", pool.run, (pool.connect_failures, pool.disconnects), takes_work=True),
        Part("smp leases", leases.run, takes_work=True, release=leases.release_all),
        Part("deferred pushes", deferred.run, (deferred.store_errors,), takes_work=True),
        Part("periodic pushes", cron.run, (cron.store_errors,), takes_work=True),
        Part("housekeeping", expiry_job(housekeeping, store.leases, instance, JobTiming(
            EXPIRY_INTERVAL_S, sc.lease_ttl_s, sc.lease_renew_s)).run  # one instance of the data set at a time
             if housekeeping.enabled else housekeeping.run),
        Part("redis health", store.watch_health),
        Part("active tokens", activity.run),
    ]
    if embedded is not None:
        parts.append(Part("embedded redis", embedded.supervise))
    env = Env(cfg, role, stats, store, embedded, push, pool, leases, housekeeping, activity, listener, parts,
              (*quotas.summaries, handlers.store_errors, listener.handshake_failures))
    await _admin_parts(env, apns, stack)
    return env


def _listener(cfg: Config, handlers: NtfHandlers, stats: Stats, quotas: FrontDoor) -> NtfListener:
    identity = ServerIdentity(certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file)),
                              load_sign_key(cfg.tls.key_file))
    s = cfg.server
    limits = ListenerLimits(s.max_connections, s.tls_timeout_s, s.handshake_timeout_s, s.block_read_timeout_s,
                            s.block_write_timeout_s, s.idle_timeout_s, s.shutdown_timeout_s, s.max_handshakes,
                            s.max_connections_per_ip, s.first_byte_timeout_s, s.max_handshakes_per_ip,
                            s.max_auth_failures)
    ctx = server_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_cert_file)
    return NtfListener(ctx, identity, handlers, stats, limits, quotas)


async def _admin_parts(env: Env, apns: ApnsMetrics, stack: AsyncExitStack) -> None:
    """What the admin API reads where it is served (the census, the push window, the other workers' figures),
    or, on another worker, this worker's figures for worker 0 (admin/workers.py)."""
    cfg, role, push = env.config, env.role, env.push
    if not cfg.admin.enabled:
        return
    local = None if role is None else LocalFigures(role.index, env.stats, apns, env.pool, env.listener,
                                                   lambda: push.queue_length,
                                                   role.restarts)
    state_dir = cfg.server.state_dir
    if not serves_admin(cfg, role):
        assert role is not None and local is not None
        figures = WorkerFiguresServer(local, socket_path(state_dir, role.index))
        await figures.start()
        stack.push_async_callback(figures.stop)
        return
    census = env.census = env.store.census_taker()
    sc = cfg.subscriber  # the census is taken by one instance of the data set at a time, the others show it
    env.parts.append(Part("census", census_job(census, SharedCensus(env.store.dataset),
                                               env.store.leases, env.leases.instance, JobTiming(
                                                   cfg.admin.census_interval_s, sc.lease_ttl_s,
                                                   sc.lease_renew_s)).run))
    window = env.window = CounterWindow(push_counter_names(), time.monotonic())
    if role is not None and local is not None:
        env.instance_view = InstanceView(local, WorkerPeers(state_dir, role.count))
    counters = env.instance_view.counters if env.instance_view else None
    env.parts.append(Part("push window", lambda: sample_every(window, env.stats, counters=counters)))
