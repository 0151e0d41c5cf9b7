"""The simulator's side of one HTTP/2 connection (see server.py for the behaviour it implements).

A connection needs a few things from the simulator that owns it (verdicts, recording, faults, counters);
they are named by the `Owner` protocol below, so this module imports nothing from server.py and the
import order stays one-way: limits <- rules <- conn <- server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Final, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from apns.headers import BlockEncoder, status_field, unindexed_field
from apns.simulator.limits import is_apns_id
from apns.simulator.rules import AuthState, RuleVerdict

_MAX_BODY_KEEP: Final = 16384  # enough to say "413"; never buffer a hostile upload
_STATUS_ONLY: Final = [(b":status", b"200")]  # h2 only inspects the list; the block is prepared apart


@dataclass
class Request:
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    size: int = 0


class FaultSettings(Protocol):
    goaway_after_streams: int | None
    goaway_reason: str
    response_delay_s: float
    unregistered: dict[str, int]


class Owner(Protocol):
    """The simulator as its connections see it (`server.ApnsSimulator`)."""

    conns: set[SimConnection]
    connections_accepted: int
    peak_streams: int
    replies: dict[str, int]
    stalled: bool
    max_streams: int
    connection_window: int
    development: bool

    @property
    def faults(self) -> FaultSettings: ...
    def decide(self, req: Request, auth: AuthState) -> RuleVerdict: ...
    def record_push(self, verdict: RuleVerdict, apns_id: str, body: bytes) -> None: ...


class SimConnection(asyncio.Protocol):
    """One client connection: h2 in, Apple's verdicts and stream-limit behaviour out."""

    def __init__(self, sim: Owner) -> None:
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
        self.reqs: dict[int, Request] = {}
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
                self.reqs[ev.stream_id] = Request(list(ev.headers))
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
        apns_id = sent_id if sent_id is not None and is_apns_id(sent_id) else str(uuid.uuid4())
        if verdict.status == 200:
            self.sim.record_push(verdict, apns_id, bytes(req.body))
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

    def _reply_later(self, sid: int, verdict: RuleVerdict, apns_id: str) -> None:
        self.pending -= 1
        self._reply(sid, verdict, apns_id)
        self._maybe_goaway()
        self._flush()

    def _reply(self, sid: int, verdict: RuleVerdict, apns_id: str) -> None:
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
