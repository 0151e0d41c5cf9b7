"""One HTTP/2 connection to APNs: an asyncio Protocol around an h2 state machine.

Theory of operation. The pool reserves a stream slot (`reserve()`), then `request()` opens a stream,
writes HEADERS (a pre-built block, see headers.py) and the body, and returns a future for the reply. Writes
are coalesced: every request in one event-loop turn leaves in one `transport.write`. Replies complete the
future on END_STREAM; every DATA byte is acknowledged at once so the flow-control window never closes,
even when thousands of error bodies arrive (aioapns 4.0 never acknowledges them and stalls after ~64 KiB).

Capacity is min(our per-connection cap, the server's SETTINGS_MAX_CONCURRENT_STREAMS), re-read whenever
the server changes it (APNs drops it to 1 after a rejected push). Streams that cannot leave because the
flow-control window is full wait in `_blocked` until WINDOW_UPDATE.

Endings: GOAWAY fails streams above last-stream-id with `ConnectionLost(processed=False)` (APNs never
saw them: safe to retry) and the rest, which h2 cannot complete after GOAWAY, with processed=None
(ambiguous, retried at least once semantics); the reason from the JSON payload is logged and counted.
A tick every `tick_s` expires requests past their deadline (RST_STREAM CANCEL) and, when nothing has been
received for `ping_interval_s`, sends a PING; no answer within `ping_timeout_s` means the connection is
dead and it is aborted, which fails its streams with processed=None.

Why one module of about 370 lines: one HTTP/2 connection's life as one asyncio Protocol around h2; its stream
states, flow control and endings are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from apns.errors import ConnectionLost, NotSent
from apns.h2fast import FastH2
from apns.headers import BlockEncoder

log = logging.getLogger("apns")

_METHOD_ONLY: Final = [(b":method", b"POST")]  # h2 only inspects the list; the block is prepared apart
_RECV_WINDOW: Final = 1 << 24  # large receive window: error bodies never throttle the server
# Writes are coalesced per event-loop turn, but a turn that starts many requests flushes every few of them
# so the server starts working while we are still building the rest (keeps both ends busy).
_FLUSH_EVERY: Final = 16


class Response(NamedTuple):
    status: int
    apns_id: str | None
    body: bytes


class RequestTimeout(Exception):
    """The reply did not come within the per-request timeout (the push may or may not have been sent)."""


@dataclass(slots=True)
class _Stream:
    future: asyncio.Future[Response]
    deadline: float
    status: int = 0
    apns_id: str | None = None
    body: bytes = b""


@dataclass(frozen=True)
class ConnectionSettings:
    max_streams: int = 500  # see ClientConfig.max_streams_per_connection
    ping_interval_s: float = 60.0
    ping_timeout_s: float = 10.0
    tick_s: float = 0.25
    receive_window: int = _RECV_WINDOW


@dataclass
class ConnectionCounters:
    goaway_reasons: dict[str, int] = field(default_factory=dict)
    pings: int = 0
    dead_by_ping: int = 0
    timeouts: int = 0


class ApnsConnection(asyncio.Protocol):
    def __init__(
        self,
        settings: ConnectionSettings,
        counters: ConnectionCounters,
        on_capacity: Callable[[ApnsConnection], None],
        on_closed: Callable[[ApnsConnection], None],
    ) -> None:
        self._settings = settings
        self._counters = counters
        self._on_capacity = on_capacity
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self._streams: dict[int, _Stream] = {}
        self._h2 = FastH2(cfg, self._streams.__len__)
        self.encoder = BlockEncoder()
        self._h2.encoder = self.encoder  # type: ignore[assignment]
        self._transport: asyncio.Transport | None = None
        self._blocked: deque[tuple[int, bytes]] = deque()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.reserved = 0  # slots promised by the pool but not yet opened
        self.remote_max = 1  # until the server's SETTINGS arrive, assume Apple's pre-auth limit
        self.draining = False  # GOAWAY received, closing, or ids exhausted: no new streams
        self.closed = False
        self._flush_pending = False
        self._unflushed = 0
        self._last_recv = time.monotonic()
        self._ping_sent_at: float | None = None
        self._tick: asyncio.TimerHandle | None = None

    # -- capacity (called synchronously by the pool) --------------------------------------------------
    @property
    def available(self) -> int:
        if self.draining or self.closed or not self.ready.done():
            return 0
        cap = min(self._settings.max_streams, self.remote_max)
        return cap - len(self._streams) - self.reserved

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    # -- requests -------------------------------------------------------------------------------------
    def request(self, block: bytes, body: bytes, timeout_s: float) -> asyncio.Future[Response]:
        """Open a stream with a reserved slot; the caller has already done `reserved += 1`."""
        self.reserved -= 1
        fut: asyncio.Future[Response] = self._loop.create_future()
        if self.draining or self.closed:
            fut.set_exception(NotSent("connection closing"))
            return fut
        h2c = self._h2
        try:
            sid = h2c.get_next_available_stream_id()
            if h2c.fast_request(sid, block, body):
                self._streams[sid] = _Stream(fut, time.monotonic() + timeout_s)
                self._after_request()
                return fut
            self.encoder.prepare(block)
            h2c.send_headers(sid, _METHOD_ONLY)
        except h2.exceptions.NoAvailableStreamIDError:
            self.drain("stream ids exhausted")
            fut.set_exception(NotSent("stream ids exhausted"))
            return fut
        except h2.exceptions.TooManyStreamsError:
            self.encoder.prepare(b"")  # nothing was sent
            fut.set_exception(NotSent("server lowered stream limit"))
            return fut
        self._streams[sid] = _Stream(fut, time.monotonic() + timeout_s)
        if not self._blocked and len(body) <= h2c.local_flow_control_window(sid):
            h2c.send_data(sid, body, end_stream=True)
        else:
            self._blocked.append((sid, body))
        self._after_request()
        return fut

    def _after_request(self) -> None:
        self._unflushed += 1
        if self._unflushed >= _FLUSH_EVERY:
            self._flush()
        else:
            self._schedule_flush()

    def _flush_blocked(self) -> None:
        h2c = self._h2
        while self._blocked:
            sid, body = self._blocked[0]
            if sid not in self._streams:  # answered or timed out before its body left: end it for h2
                self._blocked.popleft()
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    h2c.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                continue
            if len(body) > h2c.local_flow_control_window(sid):
                return
            self._blocked.popleft()
            h2c.send_data(sid, body, end_stream=True)

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._unflushed = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self.closed:
            self._transport.write(data)

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        window = self._settings.receive_window
        if window > 65535:  # HTTP/2's initial window; a larger one means fewer WINDOW_UPDATEs
            self._h2.increment_flow_control_window(window - 65535)
            self._h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self._flush()
        self._tick = self._loop.call_later(self._settings.tick_s, self._on_tick)

    def data_received(self, data: bytes) -> None:
        self._last_recv = time.monotonic()
        self._ping_sent_at = None
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("apns: HTTP/2 protocol error from server: %s", exc)
            self._abort(f"protocol error: {exc}")
            return
        for ev in events:
            self._handle(ev)
        self._flush()

    def _handle(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                for name, value in ev.headers:
                    if name == b":status":
                        st.status = int(value)
                    elif name == b"apns-id":
                        st.apns_id = value.decode()
        elif isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st.body += ev.data
        elif isinstance(ev, h2.events.StreamEnded):
            st = self._streams.pop(ev.stream_id, None)
            if st is not None:
                if not st.future.done():
                    st.future.set_result(Response(st.status, st.apns_id, st.body))
                self._released()
        elif isinstance(ev, h2.events.StreamReset):
            refused = ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            self._fail(ev.stream_id, ConnectionLost("stream reset", processed=False if refused else None))
            self._released()
        elif isinstance(ev, h2.events.WindowUpdated):
            self._flush_blocked()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self._settings_changed(ev)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._goaway(ev)

    def _settings_changed(self, ev: h2.events.RemoteSettingsChanged) -> None:
        self.remote_max = self._h2.remote_settings.max_concurrent_streams
        if not self.ready.done():
            self.ready.set_result(None)
        self._on_capacity(self)

    def _goaway(self, ev: h2.events.ConnectionTerminated) -> None:
        reason = _goaway_reason(ev)
        self._counters.goaway_reasons[reason] = self._counters.goaway_reasons.get(reason, 0) + 1
        log.warning("apns: GOAWAY reason=%s last_stream_id=%s", reason, ev.last_stream_id)
        last = ev.last_stream_id if ev.last_stream_id is not None else 0
        for sid in list(self._streams):
            # h2 accepts no frames after GOAWAY, so streams <= last cannot complete here either.
            self._fail(sid, ConnectionLost(f"GOAWAY {reason}", processed=False if sid > last else None))
        self._abort(f"GOAWAY {reason}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed_down("connection lost")

    # -- endings --------------------------------------------------------------------------------------
    def _fail(self, sid: int, exc: BaseException) -> None:
        st = self._streams.pop(sid, None)
        if st is not None and not st.future.done():
            st.future.set_exception(exc)

    def _released(self) -> None:
        if self.draining and not self._streams and self._transport is not None:
            self._transport.close()
        self._on_capacity(self)

    def drain(self, why: str) -> None:
        """No new streams; close once the in-flight ones are answered."""
        if not self.draining:
            log.info("apns: draining connection: %s", why)
        self.draining = True
        self._released()

    def _abort(self, why: str) -> None:
        self.draining = True
        if self._transport is not None:
            self._transport.abort()
        self._closed_down(why)

    def _closed_down(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.draining = True
        if self._tick is not None:
            self._tick.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionLost(why, processed=False))
        for sid in list(self._streams):
            self._fail(sid, ConnectionLost(why, processed=None))
        self._on_closed(self)

    def close(self) -> None:
        """Polite close: GOAWAY then close the transport (in-flight streams fail as connection lost)."""
        if self.closed:
            return
        try:
            self._h2.close_connection()
            self._flush()
        except h2.exceptions.ProtocolError:
            pass
        if self._transport is not None:
            self._transport.close()
        self._closed_down("closed by client")

    # -- timer: request deadlines and liveness --------------------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        expired = []
        for sid, st in self._streams.items():  # insertion order == age order
            if st.deadline > now:
                break
            expired.append(sid)
        for sid in expired:
            self._counters.timeouts += 1
            self._fail(sid, RequestTimeout())
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        if expired:
            self._released()
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at > self._settings.ping_timeout_s:
                self._counters.dead_by_ping += 1
                self._abort("no PING answer")
                return
        elif now - self._last_recv > self._settings.ping_interval_s:
            self._counters.pings += 1
            self._ping_sent_at = now
            self._h2.ping(b"apnsping")
        self._flush()
        self._tick = self._loop.call_later(self._settings.tick_s, self._on_tick)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "draining" if self.draining else "open"
        return f"<ApnsConnection {state} {len(self._streams)} in flight, limit {self.remote_max}>"


def _goaway_reason(ev: h2.events.ConnectionTerminated) -> str:
    """APNs puts `{"reason": ...}` in GOAWAY's debug data; fall back on the HTTP/2 error code."""
    if ev.additional_data:
        try:
            obj = json.loads(ev.additional_data)
            if isinstance(obj, dict) and isinstance(obj.get("reason"), str):
                return str(obj["reason"])
        except ValueError:
            pass
    code = ev.error_code
    return code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
