"""A strict local APNs: HTTP/2 over TLS (generated CA) or h2c, behaving like Apple where it matters.

    sim = ApnsSimulator([SimulatorKey.from_provider_key(key)])
    await sim.start()                        # binds 127.0.0.1:0; sim.port, sim.ca_file, sim.endpoint
    ...                                      # point ApnsClient at sim.endpoint
    push = await sim.next_push(device_token) # the next accepted push to that token
    await sim.stop()

Per connection it advertises SETTINGS_MAX_CONCURRENT_STREAMS = 1 until the first accepted push (Apple:
"only one stream until you post a request with a valid authentication token"), then `max_streams`; it
drops back to 1 after a rejected push (4xx except 410, which Apple does not count as an error) and
restores it after the next accepted one. Replies carry `apns-id` (echoed or generated) and Apple's exact
reason strings (rules in rules.py, Apple's limits in limits.py). `faults` injects failures: dead
tokens (410 Unregistered with a timestamp), random 429/500/503, GOAWAY after N streams (streams above
last-stream-id are neither processed nor recorded, as on APNs), response delays, and `stall()`: a network
black hole (bytes both ways are dropped, so no replies and no PING answers; when it ends, the connections
it swallowed are cut, as after a real outage).

Run standalone: `python -m apns.simulator --help` (cli.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apns.pool import Endpoint
from apns.simulator.conn import Request, SimConnection
from apns.simulator.limits import RETRY_REASONS
from apns.simulator.rules import AuthState, RequestChecker, RuleVerdict, SimulatorKey
from apns.simulator.tls import generate_certificates

__all__ = ["ApnsSimulator", "Faults", "RecordedPush", "SimulatorKey"]


@dataclass
class Faults:
    """Mutable at any time while the simulator runs."""

    unregistered: dict[str, int] = field(default_factory=dict)  # token -> 410 timestamp (ms)
    error_rates: dict[int, float] = field(default_factory=dict)  # 429/500/503 -> probability
    goaway_after_streams: int | None = None  # per connection
    goaway_reason: str = "Shutdown"
    response_delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedPush:
    device_token: str = field(repr=False)
    topic: str
    push_type: str | None
    priority: int | None
    expiration: int | None
    collapse_id: str | None
    apns_id: str
    body: bytes = field(repr=False)
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


class ApnsSimulator:
    def __init__(
        self,
        keys: Sequence[SimulatorKey],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        max_streams: int = 1000,
        connection_window: int = 1 << 24,
        clock: Callable[[], float] = time.time,
        record: bool = True,
        development: bool = False,
        require_push_type: bool = True,
        seed: int | None = None,
    ) -> None:
        self.checker = RequestChecker(keys, clock, require_push_type)
        self.faults = Faults()
        self.max_streams = max_streams
        # Per-stream windows stay at HTTP/2's 65,535 (observed on APNs); the connection window is widened
        # so 1,000 streams of 4 KB can be in flight (APNs' value is not documented: an assumption).
        self.connection_window = connection_window
        self.record = record
        self.development = development  # adds apns-unique-id like the sandbox
        self._host, self._port, self._tls = host, port, tls
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: str | None = None
        self.ca_pem: bytes = b""
        self._pushes: dict[str, list[RecordedPush]] = {}
        self._cursor: dict[str, int] = {}
        self._arrived: asyncio.Event | None = None
        self.conns: set[SimConnection] = set()
        self.stalled = False
        self.accepted = 0
        self.replies: dict[str, int] = {}  # reason (or "OK") -> count
        self.connections_accepted = 0
        self.peak_streams = 0  # most streams open at once on any one connection

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        ctx = None
        if self._tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="apns-sim-")
            certs = generate_certificates()
            ca, chain, key = certs.write(Path(self._tmp.name))
            self.ca_file, self.ca_pem = str(ca), certs.ca_pem
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(chain, key)
            ctx.set_alpn_protocols(["h2"])
        self._arrived = asyncio.Event()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: SimConnection(self), self._host, self._port, ssl=ctx
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.conns):
                conn.abort()
            await self._server.wait_closed()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> ApnsSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> Endpoint:
        """Where an ApnsClient should connect (trusting only the simulator's CA)."""
        host = "localhost" if self._tls else self._host
        return Endpoint(host, self._port, ca_file=self.ca_file, tls=self._tls)

    # -- test controls --------------------------------------------------------------------------------
    def bind_token(self, device_token: str, topic: str) -> None:
        """From now on `device_token` accepts only `topic` (else 400 DeviceTokenNotForTopic)."""
        self.checker.token_topics[device_token.lower()] = topic

    def unregister(self, device_token: str, timestamp_ms: int | None = None) -> None:
        """Pushes to `device_token` now get 410 Unregistered with this timestamp."""
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self.faults.unregistered[device_token.lower()] = stamp

    def stall(self, on: bool = True) -> None:
        """Start (or end) a black hole on every connection, present and future."""
        self.stalled = on
        for conn in self.conns:
            conn.set_stalled(on)

    def goaway_all(self, reason: str = "Shutdown") -> None:
        for conn in list(self.conns):
            conn.goaway_now(reason)

    # -- recorded pushes ------------------------------------------------------------------------------
    def pushes(self, device_token: str) -> list[RecordedPush]:
        return list(self._pushes.get(device_token.lower(), ()))

    def all_pushes(self) -> list[RecordedPush]:
        out = [p for ps in self._pushes.values() for p in ps]
        out.sort(key=lambda p: p.received_at)
        return out

    async def next_push(self, device_token: str, timeout_s: float = 5.0) -> RecordedPush:
        """The next push to `device_token` not yet returned by next_push (waits up to `timeout_s`)."""
        token = device_token.lower()
        assert self._arrived is not None, "simulator not started"
        async with asyncio.timeout(timeout_s):
            while True:
                got = self._pushes.get(token, [])
                idx = self._cursor.get(token, 0)
                if idx < len(got):
                    self._cursor[token] = idx + 1
                    return got[idx]
                self._arrived.clear()
                await self._arrived.wait()

    def record_push(self, verdict: RuleVerdict, apns_id: str, body: bytes) -> None:
        self.accepted += 1
        if not self.record:
            return
        push = RecordedPush(
            verdict.token,
            verdict.topic,
            verdict.push_type,
            verdict.priority,
            verdict.expiration,
            verdict.collapse_id,
            apns_id,
            body,
            time.time(),
        )
        self._pushes.setdefault(verdict.token, []).append(push)
        if self._arrived is not None:
            self._arrived.set()

    def decide(self, req: Request, auth: AuthState) -> RuleVerdict:
        verdict = self.checker.check(req.headers, req.size, auth)
        if verdict.status != 200:
            return verdict
        if verdict.token in self.faults.unregistered:
            return RuleVerdict(410, "Unregistered", verdict.token)
        for status, rate in self.faults.error_rates.items():
            if rate and self._rng.random() < rate:
                return RuleVerdict(status, RETRY_REASONS.get(status, "InternalServerError"), verdict.token)
        return verdict

    def __repr__(self) -> str:
        return f"<ApnsSimulator port={self._port} {len(self.conns)} connections, {self.accepted} accepted>"

