"""`ApnsClient`: send notifications for several apps (topics, keys, environments) over HTTP/2.

One `Pool` of connections per (endpoint, key id, team id) -- Apple binds a team to a connection -- and one
`TokenProvider` per key, shared by all its connections. `send()` turns every reply into a `SendResult` or
one of the outcomes in errors.py, retrying only where a retry is safe and useful:

* a stream APNs never processed (GOAWAY above last-stream-id, REFUSED_STREAM, a connection that closed
  before the stream left): at once, on another connection, without counting an attempt;
* connection loss with the push possibly seen (at-least-once, as APNs itself): after a capped
  exponential backoff with jitter, up to `max_attempts`, then `RetryLater`;
* 403 ExpiredProviderToken / InvalidProviderToken: once with a freshly minted JWT, then ProviderAuthError;
* 503 (APNs shutting down or unavailable): once on a fresh connection (as SimpleX does), then RetryLater.

An optional ``observer`` hears of every request that reached APNs or was lost on the way, with
(app name, HTTP status, reason, seconds): status 0 with reason ``Timeout`` or ``ConnectionLost`` when no
answer came. It is how a server exports a latency histogram and answers by status and reason (as Sygnal
does); it must be cheap and must not raise.

429 and 500 are the caller's to schedule (`RetryLater.after_s`): Apple asks for a back-off measured in
minutes on 5xx and a per-device slow-down on TooManyRequests, which a queue does better than a sleeping
coroutine.

Why one module of about 340 lines: the retry rules above are one decision over the pool, the token provider and the
outcomes; split, each rule would be read apart from the others.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from apns.connection import ConnectionCounters, ConnectionSettings, RequestTimeout
from apns.errors import (
    ConnectFailed,
    ConnectionLost,
    Kind,
    NotSent,
    Permanent,
    ProviderAuthError,
    RetryLater,
    TokenInvalid,
    classify,
    parse_error_body,
)
from apns.headers import request_block
from apns.jwt import DEFAULT_REFRESH_AFTER_S, Clock, ProviderKey, TokenProvider
from apns.payload import Notification
from apns.pool import Endpoint, Pool

# (app name, HTTP status or 0 when none came, reason ("" on 200), seconds from request to answer or loss)
Observer = Callable[[str, int, str, float], None]

_MAX_UNPROCESSED_RETRIES = 16  # a stream refused this often means something else is wrong
_MAX_LOCAL_RACES = 100  # bound on "picked a connection that closed before we used it"


@dataclass(frozen=True)
class App:
    """A named sending identity: where (endpoint), with which key, and the default topic (bundle id)."""

    endpoint: Endpoint
    key: ProviderKey
    topic: str | None = None


@dataclass(frozen=True)
class ClientConfig:
    max_connections: int = 4  # per (endpoint, key)
    # h2 walks every open stream when opening one, which made ~100 the sweet spot; our connection counts
    # streams itself (connection.py), so bigger batches win: 500 streams on one connection measured
    # ~90 us of client CPU a push vs ~99 us for 4 x 100 (tests/bench/apns_throughput.py).
    max_streams_per_connection: int = 500
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    ping_interval_s: float = 60.0
    ping_timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    jwt_refresh_after_s: float = DEFAULT_REFRESH_AFTER_S
    receive_window: int = 1 << 24  # bytes; replies are acknowledged at once whatever the size


@dataclass(frozen=True)
class SendResult:
    apns_id: str | None
    attempts: int


@dataclass(frozen=True)
class ClientStats:
    delivered: int
    token_invalid: int
    retry_later: int
    auth_errors: int
    permanent: int
    retries: int
    connections_open: int
    connections_opened: int
    connect_failures: int
    goaway_reasons: Mapping[str, int]
    pings: int
    dead_by_ping: int
    timeouts: int
    jwt_minted: int


def exponential_backoff(base_s: float, cap_s: float) -> Callable[[int], float]:
    """Capped exponential delay for attempt n (1-based) with 'equal jitter' in [d/2, d]."""

    def delay(attempt: int) -> float:
        d: float = min(cap_s, base_s * 2.0 ** (attempt - 1))
        return d / 2 + random.uniform(0, d / 2)

    return delay


@dataclass
class _Counts:
    delivered: int = 0
    token_invalid: int = 0
    retry_later: int = 0
    auth_errors: int = 0
    permanent: int = 0
    retries: int = 0
    conn: ConnectionCounters = field(default_factory=ConnectionCounters)


class ApnsClient:
    def __init__(
        self,
        apps: Mapping[str, App],
        *,
        config: ClientConfig | None = None,
        clock: Clock = time.time,
        backoff: Callable[[int], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: Observer | None = None,
    ) -> None:
        if not apps:
            raise ValueError("at least one app is required")
        self._cfg = cfg = config or ClientConfig()
        self._apps = dict(apps)
        self._backoff = backoff or exponential_backoff(cfg.backoff_base_s, cfg.backoff_cap_s)
        self._sleep = sleep
        self._observe = observer
        self._counts = _Counts()
        self._conn_settings = ConnectionSettings(
            max_streams=cfg.max_streams_per_connection,
            ping_interval_s=cfg.ping_interval_s,
            ping_timeout_s=cfg.ping_timeout_s,
            tick_s=min(0.25, cfg.request_timeout_s / 4, cfg.ping_timeout_s / 4),
            receive_window=cfg.receive_window,
        )
        self._providers: dict[tuple[str, str], TokenProvider] = {}
        self._pools: dict[tuple[Endpoint, str, str], Pool] = {}
        for app in self._apps.values():
            kid = (app.key.key_id, app.key.team_id)
            if kid not in self._providers:
                self._providers[kid] = TokenProvider(app.key, clock=clock, refresh_after_s=cfg.jwt_refresh_after_s)
        self._routes: dict[str | None, tuple[App, Pool, TokenProvider]] = {}
        self._fixed: dict[tuple[str, str, int | None], tuple[tuple[bytes, bytes], ...]] = {}
        self._closed = False

    def _route(self, app: str | None) -> tuple[App, Pool, TokenProvider]:
        hit = self._routes.get(app)
        if hit is not None:
            return hit
        route = self._new_route(app)
        self._routes[app] = route
        return route

    def _new_route(self, app: str | None) -> tuple[App, Pool, TokenProvider]:
        if app is None:
            if len(self._apps) != 1:
                raise ValueError("several apps are configured: name one")
            app = next(iter(self._apps))
        try:
            a = self._apps[app]
        except KeyError:
            raise ValueError(f"unknown app {app!r}") from None
        key = (a.endpoint, a.key.key_id, a.key.team_id)
        pool = self._pools.get(key)
        if pool is None:
            pool = Pool(
                a.endpoint,
                self._conn_settings,
                self._counts.conn,
                self._cfg.max_connections,
                self._cfg.connect_timeout_s,
            )
            self._pools[key] = pool
        return a, pool, self._providers[(a.key.key_id, a.key.team_id)]

    async def send(self, notification: Notification, app: str | None = None) -> SendResult:
        """Send one push. Returns on 200; raises TokenInvalid, RetryLater, ProviderAuthError or Permanent."""
        if self._closed:
            raise RuntimeError("ApnsClient is closed")
        a, pool, provider = self._route(app)
        name = app if app is not None else next(iter(self._apps))
        n = notification
        topic = n.topic or a.topic
        if topic is None:
            raise Permanent("no topic: set Notification.topic or App.topic")
        path = b"/3/device/" + n.device_token.encode()
        fixed = self._fixed_headers(topic, n.push_type.value, n.priority)
        per_push: list[tuple[bytes, bytes]] = []
        if n.apns_id is not None:
            per_push.append((b"apns-id", n.apns_id.encode()))
        if n.expiration is not None:
            per_push.append((b"apns-expiration", str(n.expiration).encode()))
        if n.collapse_id is not None:
            per_push.append((b"apns-collapse-id", n.collapse_id.encode()))
        attempts = unprocessed = local_races = 0
        refreshed = replaced = False
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                conn = await pool.acquire(urgent=unprocessed > 0)
                auth = provider.header()
                generation = provider.generation
                block = request_block(conn.encoder, pool.pseudo, path, ((b"authorization", auth), *fixed), per_push)
                started = time.monotonic()
                resp = await conn.request(block, n.body, self._cfg.request_timeout_s)
            except NotSent as exc:
                attempts -= 1  # raced with the connection closing; nothing was sent
                local_races += 1
                if local_races > _MAX_LOCAL_RACES:
                    self._counts.retry_later += 1
                    raise RetryLater(f"ConnectionLost: {exc.reason}", self._backoff(1)) from exc
                continue
            except ConnectionLost as exc:
                if self._observe is not None and exc.processed is not False and not isinstance(exc, ConnectFailed):
                    self._observe(name, 0, "ConnectionLost", time.monotonic() - started)
                if self._closed:
                    raise RetryLater("client closed", self._backoff(attempts)) from exc
                if (
                    exc.processed is False
                    and not isinstance(exc, ConnectFailed)
                    and unprocessed < _MAX_UNPROCESSED_RETRIES
                ):
                    unprocessed += 1
                    attempts -= 1  # APNs never saw it
                    self._counts.retries += 1
                    continue
                delay = self._backoff(attempts)
                if attempts >= self._cfg.max_attempts:
                    self._counts.retry_later += 1
                    raise RetryLater(f"ConnectionLost: {exc.reason}", delay) from exc
                self._counts.retries += 1
                await self._sleep(delay)
                continue
            except RequestTimeout:
                if self._observe is not None:
                    self._observe(name, 0, "Timeout", time.monotonic() - started)
                self._counts.retry_later += 1
                raise RetryLater("Timeout", self._backoff(attempts)) from None
            if resp.status == 200:
                if self._observe is not None:
                    self._observe(name, 200, "", time.monotonic() - started)
                self._counts.delivered += 1
                return SendResult(resp.apns_id, attempts)
            reason, stamp = parse_error_body(resp.body)
            if self._observe is not None:
                self._observe(name, resp.status, reason, time.monotonic() - started)
            kind = classify(resp.status, reason)
            if kind == Kind.REFRESH and not refreshed:
                refreshed = True  # one fresh JWT, then the answer is final
                provider.force_refresh(generation)
                self._counts.retries += 1
                continue
            if kind == Kind.RETRY and resp.status == 503 and not replaced:
                replaced = True
                conn.drain("503 " + reason)
                self._counts.retries += 1
                continue
            raise self._outcome(kind, reason, stamp, status=resp.status, apns_id=resp.apns_id, attempts=attempts)

    def _fixed_headers(self, topic: str, push_type: str, priority: int | None) -> tuple[tuple[bytes, bytes], ...]:
        """The headers that repeat across pushes of one kind (encoded once, then HPACK-indexed)."""
        key = (topic, push_type, priority)
        hit = self._fixed.get(key)
        if hit is None:
            hdrs = [(b"apns-topic", topic.encode()), (b"apns-push-type", push_type.encode())]
            if priority is not None:
                hdrs.append((b"apns-priority", str(priority).encode()))
            hit = self._fixed[key] = tuple(hdrs)
        return hit

    def _outcome(
        self, kind: str, reason: str, stamp: int | None, *, status: int, apns_id: str | None, attempts: int
    ) -> Exception:
        c = self._counts
        if kind == Kind.TOKEN:
            c.token_invalid += 1
            return TokenInvalid(reason, stamp, status, apns_id)
        if kind == Kind.RETRY:
            c.retry_later += 1
            return RetryLater(reason, self._backoff(attempts), status, apns_id)
        if kind in (Kind.AUTH, Kind.REFRESH):
            c.auth_errors += 1
            return ProviderAuthError(reason, status, apns_id)
        c.permanent += 1
        return Permanent(reason, status, apns_id)

    def stats(self) -> ClientStats:
        c = self._counts
        pools = list(self._pools.values())
        return ClientStats(
            delivered=c.delivered,
            token_invalid=c.token_invalid,
            retry_later=c.retry_later,
            auth_errors=c.auth_errors,
            permanent=c.permanent,
            retries=c.retries,
            connections_open=sum(len(p.conns) for p in pools),
            connections_opened=sum(p.opened for p in pools),
            connect_failures=sum(p.connect_failures for p in pools),
            goaway_reasons=dict(c.conn.goaway_reasons),
            pings=c.conn.pings,
            dead_by_ping=c.conn.dead_by_ping,
            timeouts=c.conn.timeouts,
            jwt_minted=sum(p.minted for p in self._providers.values()),
        )

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        await asyncio.sleep(0)  # let transports run their close callbacks

    async def __aenter__(self) -> ApnsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ApnsClient {len(self._apps)} apps, pools={list(self._pools.values())!r}>"
