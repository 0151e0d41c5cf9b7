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
reason strings (rules in sim_rules.py). `faults` injects failures: dead tokens (410 Unregistered with a
timestamp), random 429/500/503, GOAWAY after N streams (streams above last-stream-id are neither processed
nor recorded, as on APNs), response delays, and `stall()`: a network black hole (bytes both ways are
dropped, so no replies and no PING answers; when it ends, the connections it swallowed are cut, as after a
real outage).

Run standalone: `python -m apns.simulator --help` (apns/sim_cli.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from apns.headers import BlockEncoder, status_field, unindexed_field
from apns.pool import Endpoint
from apns.sim_rules import AuthState, RequestChecker, SimulatorKey, Verdict, is_uuid
from apns.sim_tls import generate_certificates

_MAX_BODY_KEEP: Final = 16384  # enough to say "413"; never buffer a hostile upload
_STATUS_ONLY: Final = [(b":status", b"200")]  # h2 only inspects the list; the block is prepared apart
_RETRY_REASONS: Final = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}

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


@dataclass
class _Req:
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    size: int = 0


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
        self.conns: set[_SimConnection] = set()
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
            lambda: _SimConnection(self), self._host, self._port, ssl=ctx
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

    def _record(self, verdict: Verdict, apns_id: str, body: bytes) -> None:
        self.accepted += 1
        if not self.record:
            return
        push = RecordedPush(
            verdict.token,
            verdict.topic,
            verdict.push_type.value if verdict.push_type else None,
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

    def decide(self, req: _Req, auth: AuthState) -> Verdict:
        verdict = self.checker.check(req.headers, req.size, auth)
        if verdict.status != 200:
            return verdict
        if verdict.token in self.faults.unregistered:
            return Verdict(410, "Unregistered", verdict.token)
        for status, rate in self.faults.error_rates.items():
            if rate and self._rng.random() < rate:
                return Verdict(status, _RETRY_REASONS.get(status, "InternalServerError"), verdict.token)
        return verdict

    def __repr__(self) -> str:
        return f"<ApnsSimulator port={self._port} {len(self.conns)} connections, {self.accepted} accepted>"


class _SimConnection(asyncio.Protocol):
    def __init__(self, sim: ApnsSimulator) -> None:
        self.sim = sim
        cfg = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(cfg)  # inbound validation stays on: the simulator is strict
        self.encoder = BlockEncoder()
        self.h2.encoder = self.encoder  # type: ignore[assignment]
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1}
        )
        self.auth = AuthState()
        self.advertised = 1
        self.settings_history: list[int] = [1]  # MAX_CONCURRENT_STREAMS values advertised, in order
        self.reqs: dict[int, _Req] = {}
        self.pending = 0  # replies scheduled but not yet sent (response delay)
        self.processed = 0
        self.goaway_last: int | None = None
        self.transport: asyncio.Transport | None = None
        self.stalled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sim.conns.add(self)
        self.sim.connections_accepted += 1
        self.stalled = self.sim.stalled
        self.h2.initiate_connection()
        if self.sim.connection_window > 65535:
            self.h2.increment_flow_control_window(self.sim.connection_window - 65535)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.conns.discard(self)

    def set_stalled(self, on: bool) -> None:
        if on:
            self.stalled = True
        elif self.stalled:
            self.abort()  # the outage broke this connection's HTTP/2 state

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing() and not self.stalled:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.stalled:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # h2 queued a GOAWAY describing the violation
            self.abort()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.reqs[ev.stream_id] = _Req(list(ev.headers))
                open_now = len(self.reqs) + self.pending
                self.sim.peak_streams = max(self.sim.peak_streams, open_now)
            elif isinstance(ev, h2.events.DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                req = self.reqs.get(ev.stream_id)
                if req is not None:
                    req.size += len(ev.data)
                    if len(req.body) < _MAX_BODY_KEEP:
                        req.body += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                self._request_done(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reqs.pop(ev.stream_id, None)
        self._flush()

    def _request_done(self, sid: int) -> None:
        req = self.reqs.pop(sid, None)
        if req is None:
            return
        if self.goaway_last is not None and sid > self.goaway_last:
            return  # beyond the GOAWAY point: never processed, never answered (the client retries elsewhere)
        verdict = self.sim.decide(req, self.auth)
        sent_id = _header(req.headers, b"apns-id")
        apns_id = sent_id if sent_id is not None and is_uuid(sent_id) else str(uuid.uuid4())
        if verdict.status == 200:
            self.sim._record(verdict, apns_id, bytes(req.body))
        key = verdict.reason or "OK"
        self.sim.replies[key] = self.sim.replies.get(key, 0) + 1
        self.processed += 1
        limit = self.sim.faults.goaway_after_streams
        if limit is not None and self.processed >= limit and self.goaway_last is None:
            self.goaway_last = sid
        delay = self.sim.faults.response_delay_s
        if delay > 0:
            self.pending += 1
            asyncio.get_running_loop().call_later(delay, self._reply_later, sid, verdict, apns_id)
        else:
            self._reply(sid, verdict, apns_id)
        self._maybe_goaway()

    def _reply_later(self, sid: int, verdict: Verdict, apns_id: str) -> None:
        self.pending -= 1
        self._reply(sid, verdict, apns_id)
        self._maybe_goaway()
        self._flush()

    def _reply(self, sid: int, verdict: Verdict, apns_id: str) -> None:
        # Every reply header is unique per push, so it goes out as a literal without indexing (what Apple
        # asks of providers for per-push values) and needs no Huffman work on either side.
        block = [status_field(verdict.status), unindexed_field(b"apns-id", apns_id.encode())]
        if self.sim.development:
            block.append(unindexed_field(b"apns-unique-id", str(uuid.uuid4()).encode()))
        try:
            if verdict.status == 200:
                self.encoder.prepare(b"".join(block))
                self.h2.send_headers(sid, _STATUS_ONLY, end_stream=True)
            else:
                obj: dict[str, object] = {"reason": verdict.reason}
                if verdict.status == 410:
                    obj["timestamp"] = self.sim.faults.unregistered.get(verdict.token, 0)
                body = json.dumps(obj).encode()
                block.append(unindexed_field(b"content-type", b"application/json"))
                self.encoder.prepare(b"".join(block))
                self.h2.send_headers(sid, _STATUS_ONLY)
                self.h2.send_data(sid, body, end_stream=True)
        except h2.exceptions.ProtocolError:
            return  # the client reset the stream meanwhile
        self._adjust_streams(verdict.status)

    def _adjust_streams(self, status: int) -> None:
        """Apple: limit 1 after a rejected push (410 is not an error), restored after an accepted one."""
        want = self.sim.max_streams if status == 200 else 1 if 400 <= status < 500 and status != 410 else None
        if want is not None and want != self.advertised:
            self.advertised = want
            self.settings_history.append(want)
            self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: want})

    def _maybe_goaway(self) -> None:
        """GOAWAY promises every stream <= last-stream-id is (or will be) processed: send it only when the
        replies to all of them have left, since an HTTP/2 client reads nothing after GOAWAY."""
        last = self.goaway_last
        if last is None or self.pending or any(sid <= last for sid in self.reqs):
            return
        self.goaway_now(self.sim.faults.goaway_reason, self.goaway_last)

    def goaway_now(self, reason: str, last: int | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        last_sid = last if last is not None else self.h2.highest_inbound_stream_id
        self.goaway_last = last_sid
        self.h2.close_connection(
            error_code=h2.errors.ErrorCodes.NO_ERROR,
            additional_data=json.dumps({"reason": reason}).encode(),
            last_stream_id=last_sid,
        )
        self._flush()
        self.transport.close()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n == name:
            return v.decode(errors="replace")
    return None


if __name__ == "__main__":  # python -m apns.simulator
    from apns.sim_cli import main

    main()
