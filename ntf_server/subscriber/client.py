"""One SMP connection: the asyncio wrapper around the sans-IO SMP client (§1.8, §3.1–3.3).

Theory of operation. :meth:`SmpClient.start` connects (``connect.open_smp``: hosts in order, name
resolved every time, TLS pinned, handshake v7–20) and starts one task that runs, in one ``TaskGroup``
(STYLE 7), a **reader**, a **writer** and a **ticker**; the first of them to end ends the others, and a
``finally`` records why (:meth:`wait_closed`, :attr:`close_error`) and closes the event channel.

* Sending. :meth:`subscribe` never waits: the session signs the NSUBs and packs them into full blocks at
  once, and the blocks go to an unbounded FIFO that only the writer drains. From v11 every block is sealed
  with the next key of a chain, so blocks must be written in the order the session made them — one FIFO
  and one writer guarantee it (PINGs go through the same FIFO). The pool bounds what it queues (see
  :attr:`awaiting`, :attr:`outbox_blocks`, :meth:`flushed`).
* Receiving. The reader feeds each block to the session and puts the block's events, as one list, into a
  bounded channel (:meth:`events`). When the channel is full the reader waits, so nothing more is read from
  the socket: TCP flow control then makes the SMP server keep what we have not taken (it retains
  notifications), and nothing is lost or reordered. The consumer takes everything waiting at once
  (:class:`EventStream`), so the further it fell behind, the fewer round trips it spends per event.
* Time. The ticker wakes every ``tick_s`` (``sleep`` injected) and, on the *session clock*, expires
  unanswered commands (``SubscriptionTimedOut`` / ``PingTimedOut`` events; a timeout counts from when the
  writer wrote the command's block), re-sends the timed-out NSUBs whose backoff is over (their queues stay
  pending and a late answer still counts: nothing is forgotten), sends PING after
  ``ping_idle_s`` of silence and drops the connection after repeated timeouts (``liveness``). The session
  clock is the injected ``clock`` minus the time the reader spent waiting for the consumer: answers
  sitting unread in the socket because the pool is slow are not timeouts.

Foreign exceptions become the four of ``link_errors`` here and in ``connect`` only. Reprs show counts and
the host, never queue ids or keys.

Why one module of about 400 lines: the reader, the writer and the ticker share one session, its block FIFO
and its clock, and are read together; the protocol itself is apart (protocol/smp_session.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Self

from ntf_server.protocol import smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.framing import SMP_CLIENT_VRANGE, VersionRange
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.protocol.smp_session import NotifierQueue, SmpClientSession, SmpProtocolError
from ntf_server.subscriber.channel import Channel
from ntf_server.subscriber.connect import Connected, TcpOpener, open_smp, open_tcp
from ntf_server.subscriber.link_errors import ClientError, ConnectionLost, ProtocolError
from ntf_server.subscriber.linkstate import LinkState
from ntf_server.subscriber.liveness import Liveness, SessionClock, Timeouts
from ntf_server.transport import tls
from ntf_server.transport.blocks import BlockStream, ConnectionClosed

log = logging.getLogger(__name__)

EventBatch = list[E.SmpEvent]  # the events of one received block (or of one timer tick), in order
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
EVENT_BATCHES_MAX: Final = 64  # blocks of events waiting for the pool before the reader stops reading
MERGE_EVENTS_MAX: Final = 1000  # events handed over at once when several blocks' are waiting


class EventStream:
    """What the consumer reads: the next block's events merged with the events of every block already
    waiting behind it (up to about ``MERGE_EVENTS_MAX``), in order. A consumer that costs a store round trip
    per batch and fell behind (an SMP server sends one NMSG per block when it is not busy) then catches up
    with one round trip for many blocks instead of staying behind: tests/bench/nmsg_pipeline.py."""

    def __init__(self, channel: Channel[EventBatch], max_events: int = MERGE_EVENTS_MAX) -> None:
        self._channel = channel
        self._max = max_events

    def __len__(self) -> int:
        return len(self._channel)

    async def get(self) -> EventBatch:
        """The next merged batch; ``StopAsyncIteration`` once the connection closed and all was taken."""
        batch = await self._channel.get()
        while len(batch) < self._max and (more := self._channel.get_nowait()) is not None:
            batch = [*batch, *more]
        return batch

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> EventBatch:
        return await self.get()


@dataclass(slots=True)
class ClientCounters:
    blocks_sent: int = 0
    blocks_received: int = 0
    nsubs_sent: int = 0
    nsubs_resent: int = 0  # NSUBs sent again on this connection after they timed out
    pings_sent: int = 0
    timeouts: int = 0  # commands that got no answer in time
    paused_s: float = 0.0  # time the reader waited for the consumer (back-pressure)


class SmpClient:
    """One connection to one SMP server; see the module docstring. Not reusable: after it closes, make a new one."""

    def __init__(
        self,
        server: SMPServer,
        *,
        hosts: Sequence[str] | None = None,
        context: ssl.SSLContext | None = None,
        timeouts: Timeouts | None = None,
        opener: TcpOpener = open_tcp,
        versions: VersionRange = SMP_CLIENT_VRANGE,
        event_batches_max: int = EVENT_BATCHES_MAX,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[int], bytes] | None = None,  # None: the session's own pool of os.urandom
    ) -> None:
        self.server = server
        # Without a proxy-capable opener an .onion host cannot be reached: the pool passes hosts to change this.
        default_hosts = [h for h in server.hosts if opener is not open_tcp or not h.endswith(".onion")]
        self.hosts = tuple(hosts if hosts is not None else default_hosts)
        self._context = context or tls.smp_client_context()
        self._own_context = context is None
        # Our service certificate for this server (set before start): offered in TLS and in the hello.
        self.service: ServiceCredentials | None = None
        self._timeouts = timeouts or Timeouts()
        self._opener = opener
        self._versions = versions
        self._time = SessionClock(clock)
        self._sleep = sleep
        self._random = random
        self.state = LinkState.IDLE
        self.host: str | None = None  # the host that answered
        self.counters = ClientCounters()
        self._events: Channel[EventBatch] = Channel(event_batches_max)
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._closed = asyncio.Event()
        self._close_error: ClientError | None = None
        self._session: SmpClientSession | None = None
        self._liveness: Liveness | None = None
        self._task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[Connected] | None = None
        self._stream: BlockStream | None = None

    def __repr__(self) -> str:
        where = f"{self.host or ','.join(self.hosts)}:{self.server.effective_port}"
        parts = [self.state.value]
        if self._session is not None:
            s = self._session
            parts.append(f"v{s.version}")
            parts += [f"{len(s.queues(st))} {st.value}" for st in E.QueueState if s.queues(st)]
            parts.append(f"{s.awaiting()} awaiting")
        parts.append(f"outbox {self._outbox.qsize()} blocks, events {len(self._events)}/{self._events.maxsize}")
        if self.reading_paused:
            parts.append("reading paused")
        if self._close_error is not None:
            parts.append(f"({type(self._close_error).__name__})")
        return f"<SmpClient {where} {', '.join(parts)}>"

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and handshake; raises ``ConnectFailed`` or ``HandshakeFailed`` (then it is closed)."""
        if self.state is not LinkState.IDLE:
            raise RuntimeError(f"SmpClient.start() on a {self.state.value} client")
        self.state = LinkState.CONNECTING
        context = self._context
        if self.service is not None and self._own_context:
            context = tls.smp_service_context(self.service.chain, self.service.key)
        self._connecting = asyncio.create_task(
            open_smp(self.hosts, self.server.effective_port, self.server.key_hash, context=context,
                     timeouts=self._timeouts, opener=self._opener, versions=self._versions, service=self.service))
        try:
            conn = await self._connecting
        except ClientError as e:
            self._finish(e)
            raise
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self.closed and me is not None and not me.cancelling():  # close() cancelled the connect
                raise ConnectionLost("closed while connecting") from None
            self._finish(ConnectionLost("connect cancelled"))
            raise
        now = self._now()
        self.host = conn.host
        self._session = SmpClientSession(conn.handshake, now=now, random=self._random, service=conn.service)
        self._liveness = Liveness(self._timeouts, now=now)
        self.state = LinkState.UP
        self._stream = conn.stream
        self._task = asyncio.create_task(self._run(conn.stream), name=f"smp-client {conn.host}")

    async def close(self) -> None:
        """Close (idempotent); the event stream ends after what was already queued."""
        if self._task is None:
            if self.state is not LinkState.DOWN:
                self._finish(None)
            if self._connecting is not None:
                self._connecting.cancel()  # start() then raises ConnectionLost
            return
        self._task.cancel()
        await asyncio.wait([self._task])
        if self._stream is not None and not self.closed:  # cancelled before it ever ran: no finally there
            self._stream.abort()
            self._finish(None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_closed(self) -> ClientError | None:
        """Until the connection is closed; why (None: :meth:`close` was called)."""
        await self._closed.wait()
        return self._close_error

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_error(self) -> ClientError | None:
        return self._close_error

    # ------------------------------------------------------------ what the pool uses

    def subscribe(self, queues: Iterable[NotifierQueue]) -> int:
        """Queue NSUBs for these queues (many per block); returns the number of blocks queued. Never waits.
        Raises ``ConnectionLost`` when not connected and ``ValueError`` for a queue already pending here.
        CPU: one signature per queue, so the pool passes chunks (e.g. ≤ 1,000 queues) between awaits."""
        session, batch = self._up(), list(queues)
        blocks = session.subscribe(batch)
        self._enqueue(blocks)
        self.counters.nsubs_sent += len(batch)
        return len(blocks)

    def subscribe_service(self, count: int, ids_hash: bytes) -> None:
        """Queue ``NSUBS`` for every queue tied to our service (a service session only); never waits."""
        self._enqueue(self._up().subscribe_service(count, ids_hash))

    @property
    def service_id(self) -> bytes | None:
        """Our service id on this connection (None: not a service session)."""
        s = self._session
        return None if s is None or s.service is None else s.service.service_id

    def events(self) -> EventStream:
        """The event batches (``async for batch in client.events()``), one list per received block or timer
        tick, or several of them merged when they were waiting (:class:`EventStream`); the iteration ends
        once the connection closed and every batch was taken. One consumer."""
        return EventStream(self._events)

    @property
    def version(self) -> int | None:
        return None if self._session is None else self._session.version

    @property
    def awaiting(self) -> int:
        """Commands sent (or queued) and not yet answered or expired."""
        return 0 if self._session is None else self._session.awaiting()

    @property
    def reading_paused(self) -> bool:
        """The reader waits for the consumer to take events (back-pressure): nothing is read meanwhile."""
        return self._time.paused

    @property
    def outbox_blocks(self) -> int:
        return self._outbox.qsize()

    async def flushed(self) -> None:
        """Until every queued block was written (or the connection closed)."""
        await self._flushed.wait()

    def queue_state(self, notifier_id: bytes) -> E.QueueState | None:
        return None if self._session is None else self._session.state(notifier_id)

    def queues(self, *states: E.QueueState) -> list[bytes]:
        """Notifier ids in these states on this connection (e.g. PENDING + ACTIVE after it closed)."""
        return [] if self._session is None else self._session.queues(*states)

    def forget(self, notifier_id: bytes) -> None:
        """SDEL/TDEL: SMP cannot unsubscribe; later NMSGs for it arrive with ``state=None``."""
        if self._session is not None:
            self._session.forget(notifier_id)

    # ------------------------------------------------------------ internals

    def _up(self) -> SmpClientSession:
        if self.state is not LinkState.UP or self._session is None:
            raise ConnectionLost(f"SMP connection is {self.state.value}")
        return self._session

    def _now(self) -> float:
        return self._time.now()

    def _enqueue(self, blocks: list[bytes]) -> None:
        for b in blocks:
            self._outbox.put_nowait(b)
        if blocks:
            self._flushed.clear()

    def _finish(self, error: ClientError | None) -> None:
        self.state = LinkState.DOWN
        self._close_error = error
        self._events.close()
        self._flushed.set()
        self._closed.set()

    async def _run(self, stream: BlockStream) -> None:
        error: ClientError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(stream))
                tg.create_task(self._write(stream))
                tg.create_task(self._tick())
        except* ClientError as group:
            error = group.exceptions[0]  # type: ignore[assignment]
        except* Exception as group:  # a bug of ours: this connection ends, the pool carries on
            log.error("SMP client %s failed", self.host, exc_info=group.exceptions[0])
            error = ConnectionLost(f"internal error: {group.exceptions[0]!r}")
        finally:
            stream.abort()
            self._finish(error)
            if error is not None:  # hosts are metadata: at debug; the pool counts and summarises disconnects
                log.debug("SMP connection to %s:%s closed: %s", self.host, self.server.effective_port, error)

    async def _read(self, stream: BlockStream) -> None:
        session, liveness = self._up(), self._liveness
        assert liveness is not None
        while True:
            try:
                block = await stream.read_block()
            except TimeoutError as e:  # before OSError, of which it is a subclass
                raise ConnectionLost("a block did not arrive whole in time") from e
            except (ConnectionClosed, OSError) as e:
                raise ConnectionLost(f"closed by the server ({e})") from e
            now = self._now()
            liveness.received(now)
            self.counters.blocks_received += 1
            try:
                events = session.receive_block(block, now=now)
            except SmpProtocolError as e:
                raise ProtocolError(str(e)) from e
            if events:
                await self._emit_reading(events)

    async def _emit_reading(self, events: EventBatch) -> None:
        """Put a block's events; while waiting for room the session clock stands still (back-pressure)."""
        if not self._events.full:
            await self._events.put(events)
            return
        self._time.pause()
        try:
            await self._events.put(events)
        finally:
            self._time.resume()
            self.counters.paused_s = self._time.paused_s

    async def _write(self, stream: BlockStream) -> None:
        while True:
            block = await self._outbox.get()
            try:
                await stream.write_block(block)
            except TimeoutError as e:  # before OSError, of which it is a subclass
                raise ConnectionLost("the server does not take our blocks") from e
            except (ConnectionClosed, OSError) as e:
                raise ConnectionLost(f"write failed ({e})") from e
            self._up().block_written(now=self._now())  # its commands' response timeouts start now
            self.counters.blocks_sent += 1
            if self._outbox.empty():
                self._flushed.set()

    async def _tick(self) -> None:
        while True:
            await self._sleep(self._timeouts.tick_s)
            await self._on_tick()

    async def _on_tick(self) -> None:
        session, liveness = self._up(), self._liveness
        assert liveness is not None
        now = self._now()
        expired = session.expire(now=now, timeout_s=self._timeouts.response_s)
        if expired:
            liveness.timed_out(len(expired))
            self.counters.timeouts += len(expired)
            await self._events.put(expired)
        resent = session.resend_due(now=now)  # timed-out NSUBs, again on this connection (backoff 1 → 10 s)
        if resent:
            self._enqueue(resent)
            self.counters.nsubs_resent += session.resent_last
        reason = liveness.drop_reason(now)
        if reason is not None:
            raise ConnectionLost(reason)
        if liveness.ping_due(now):
            liveness.pinged(now)
            self._enqueue([session.ping()])
            self.counters.pings_sent += 1
