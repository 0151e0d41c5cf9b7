"""One SMP connection's protocol state after the handshake, sans-IO (§1.5, §1.6, §2.3–2.4, §3).

See ``smp_client`` for the theory of operation (handshake → session → events); the queue state table and
the events live in ``smp_events``.

Never forgetting a subscription. Each NSUB's response timeout counts from when its block was
*written* (:meth:`SmpClientSession.block_written`, called by the I/O layer in order), not from when it was
queued behind thousands of others. A timed-out NSUB keeps its corrId, so a late answer is still applied,
and its queue stays PENDING with a re-send due after a jittered backoff (1 s doubling to 10 s,
:meth:`resend_due`), on the same connection, until some answer arrives or the pool forgets the queue.
A timed-out corrId is dropped only after ``STALE_AFTER_TIMEOUTS`` response timeouts, so a server that never
answers cannot grow this state without bound.

Why one module of about 380 lines: one state machine (queues, corrIds, re-sends, the block cipher chain); its
events and queue table are already apart in smp_events.py.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ntf_server.protocol import crypto, smp as S, smp_events as E
from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.error_types import ErrorType
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    Batch,
    RawTransmission,
    batch_transmissions,
    encode_auth,
    encode_transmission,
    for_auth,
    parse_block,
)
from ntf_server.protocol.smp_client import BlockCodec, SmpHandshake
from ntf_server.protocol.smp_service import ServiceSession

CORR_ID_LEN: Final = 24  # Haskell clients use 24 random bytes; it doubles as the authenticator nonce
RESEND_BASE_S: Final = 1.0  # first re-send of a timed-out NSUB (Haskell's reconnect interval: 1 s → 10 s)
RESEND_CAP_S: Final = 10.0
STALE_AFTER_TIMEOUTS: Final = 10  # a timed-out corrId still accepts its answer this many timeouts long


class SmpProtocolError(Exception):
    """A received block is unusable (bad encryption, padding or batch): drop the connection."""


@dataclass(frozen=True, slots=True)
class NotifierQueue:
    """What NSUB needs for one queue: its notifier id and the notifier private key from SNEW."""

    notifier_id: bytes
    key: crypto.NotifierKey = field(repr=False)

    def __repr__(self) -> str:
        return f"NotifierQueue(<{len(self.notifier_id)}-byte id>)"


@dataclass(slots=True)
class _Pending:
    kind: E.CommandKind
    entity_id: bytes
    sent_at: float | None  # when its block was written (None: still queued)
    queue: NotifierQueue | None = field(default=None, repr=False)  # NSUB: to re-send it
    timed_out: bool = False  # expired; kept so that a late answer is applied


@dataclass(slots=True)
class _Resend:
    queue: NotifierQueue = field(repr=False)
    attempt: int  # timeouts so far
    due: float


class RandomPool:
    """``os.urandom`` drawn 4 KiB at a time: one system call per ~170 corrIds instead of one each (an NSUB's
    corrId was 2% of resubscription's CPU, tests/bench/resubscribe.py). One per session: no bytes are ever
    handed out twice."""

    __slots__ = ("_buf", "_pos")
    SIZE: Final = 4096

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        if n > self.SIZE:
            return os.urandom(n)
        if self._pos + n > len(self._buf):
            self._buf, self._pos = os.urandom(self.SIZE), 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out


class SmpClientSession:
    """One SMP connection's protocol state after the handshake (see the module docstring)."""

    def __init__(self, hs: SmpHandshake, *, now: float, random: Callable[[int], bytes] | None = None,
                 resend_base_s: float = RESEND_BASE_S, resend_cap_s: float = RESEND_CAP_S,
                 service: ServiceSession | None = None) -> None:
        self.params = hs.params
        self.service = service  # a service session (smp_service): NSUBs double-signed, NSUBS allowed
        self._server_dh = hs.server_dh_key
        self._codec = BlockCodec(hs)
        self._random = random or RandomPool()
        self._resend_base_s = resend_base_s
        self._resend_cap_s = resend_cap_s
        self._buf = bytearray()
        self._pending: dict[bytes, _Pending] = {}  # corrId → what it asked (timed-out NSUBs included)
        self._timed_out = 0  # entries of _pending that timed out
        self._live: dict[bytes, bytes] = {}  # notifier id → corrId of its NSUB not (yet) timed out
        self._resend: dict[bytes, _Resend] = {}  # notifier id → its re-send after a timeout
        self._unwritten: deque[list[bytes]] = deque()  # corrIds of each block made and not yet written
        self._queues: dict[bytes, E.QueueState] = {}  # notifier id → state on this connection
        self._forgotten: set[bytes] = set()  # the pool forgot them here (SDEL/TDEL)
        self.resent_last = 0  # NSUBs in the last resend_due() blocks
        self.last_received = now

    def __repr__(self) -> str:
        counts = {s: 0 for s in E.QueueState}
        for s in self._queues.values():
            counts[s] += 1
        states = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        return (f"<SmpClientSession v{self.version} {states or 'no queues'}, {self.awaiting()} awaiting, "
                f"{len(self._resend)} to re-send>")

    @property
    def version(self) -> int:
        return self.params.version

    def state(self, notifier_id: bytes) -> E.QueueState | None:
        return self._queues.get(notifier_id)

    def queues(self, *states: E.QueueState) -> list[bytes]:
        """Notifier ids in any of ``states`` (e.g. ACTIVE and PENDING → INACTIVE after a disconnect)."""
        return [q for q, s in self._queues.items() if s in states]

    def forget(self, notifier_id: bytes) -> None:
        """The pool dropped the queue (SDEL/TDEL): SMP cannot unsubscribe, later NMSGs come with state None;
        a timed-out NSUB of it is not re-sent."""
        if self._queues.pop(notifier_id, None) is not None:
            self._forgotten.add(notifier_id)
        self._resend.pop(notifier_id, None)
        self._live.pop(notifier_id, None)

    def idle_for(self, now: float) -> float:
        return now - self.last_received

    # ------------------------------------------------------------ sending

    def subscribe(self, queues: Iterable[NotifierQueue]) -> list[bytes]:
        """NSUB for each queue, packed into full blocks; write the blocks in this order and report each with
        :meth:`block_written` (the response timeouts start there)."""
        batch = list(queues)
        ids = [q.notifier_id for q in batch]
        if len(set(ids)) != len(ids) or any(i in self._live for i in ids):
            raise ValueError("NSUB for a queue that already has one in flight on this connection")
        for i in ids:
            self._resend.pop(i, None)
        return self._nsubs(batch)

    def _nsubs(self, batch: Sequence[NotifierQueue]) -> list[bytes]:
        transmissions = []
        for q in batch:
            self._move(q.notifier_id, E.QueueEvent.SEND_NSUB)
            self._forgotten.discard(q.notifier_id)
            corr_id = self._new_corr_id(E.CommandKind.NSUB, q.notifier_id, q)
            self._live[q.notifier_id] = corr_id
            transmissions.append((corr_id, self._signed(corr_id, q, S.encode_command(S.NSub(), self.version))))
        return self._blocks(transmissions)

    def resend_due(self, *, now: float) -> list[bytes]:
        """Blocks re-sending the NSUBs whose timeout backoff is over (queues still PENDING here)."""
        due = [r for nid, r in self._resend.items() if r.due <= now and nid not in self._live
               and self._queues.get(nid) is E.QueueState.PENDING]
        for r in due:
            r.due = float("inf")  # until this one times out too (or is answered: then dropped)
        self.resent_last = len(due)
        return self._nsubs([r.queue for r in due]) if due else []

    def ping(self) -> bytes:
        corr_id = self._new_corr_id(E.CommandKind.PING, b"", None)
        ping = encode_transmission(self.params, corr_id, b"", S.encode_command(S.SmpPing(), self.version))
        [block] = self._blocks([(corr_id, ping)])
        return block

    def block_written(self, *, now: float) -> None:
        """The oldest block made and not yet written has been written: its commands' timeouts start now."""
        if not self._unwritten:
            raise ValueError("block_written() without a block waiting")
        for corr_id in self._unwritten.popleft():
            p = self._pending.get(corr_id)
            if p is not None:
                p.sent_at = now

    def _new_corr_id(self, kind: E.CommandKind, entity: bytes, queue: NotifierQueue | None) -> bytes:
        corr_id = self._random(CORR_ID_LEN)
        if corr_id in self._pending:
            raise ValueError("corrId collision: the random source repeats itself")
        self._pending[corr_id] = _Pending(kind, entity, None, queue)
        return corr_id

    def _signed(self, corr_id: bytes, q: NotifierQueue, command: bytes) -> bytes:
        """``encode_transmission`` with the auth, from one encoding of the body (one per NSUB, resubscribing)."""
        authorized, to_send = for_auth(self.params, corr_id, q.notifier_id, command)
        svc = self.service
        if svc is None:
            auth = crypto.client_authorize(q.key, authorized, corr_id, self._server_dh)
            return encode_auth(self.params, auth) + to_send
        # A service session: the queue key covers certHash ‖ authorized, the session key signs authorized.
        auth = crypto.client_authorize(q.key, svc.cert_hash + authorized, corr_id, self._server_dh)
        return encode_auth(self.params, auth, crypto.sign(svc.key, authorized)) + to_send

    def subscribe_service(self, count: int, ids_hash: bytes) -> list[bytes]:
        """``NSUBS`` for every queue tied to our service (the count and IdsHash we stored); a service
        session only. One block; its answer is a ``ServiceSubscribed`` or ``ServiceSubscriptionFailed``."""
        svc = self.service
        if svc is None:
            raise ValueError("NSUBS needs a service session")
        corr_id = self._new_corr_id(E.CommandKind.NSUBS, svc.service_id, None)
        command = S.encode_command(S.NSubs(count, ids_hash), self.version)
        authorized, _ = for_auth(self.params, corr_id, svc.service_id, command)
        t = encode_transmission(self.params, corr_id, svc.service_id, command, auth=crypto.sign(svc.key, authorized))
        return self._blocks([(corr_id, t)])

    def _blocks(self, transmissions: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Sealed blocks of (corrId, transmission) pairs, in order; remembers each block's corrIds."""
        out = []
        for b in batch_transmissions(self.params, [t for _, t in transmissions]):
            if not isinstance(b, Batch):  # an NSUB is ~200 bytes; a block holds 16 KB
                raise AssertionError("an SMP command does not fit a block")
            out.append(self._codec.seal(b.content))
            self._unwritten.append([transmissions[i][0] for i in b.indexes])
        return out

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes, *, now: float) -> list[E.SmpEvent]:
        """Feed bytes as they arrive; every complete block is processed, the rest is kept."""
        self._buf += data
        events: list[E.SmpEvent] = []
        while len(self._buf) >= SMP_BLOCK_SIZE:
            block = bytes(self._buf[:SMP_BLOCK_SIZE])
            del self._buf[:SMP_BLOCK_SIZE]
            events += self.receive_block(block, now=now)
        return events

    def receive_block(self, block: bytes, *, now: float) -> list[E.SmpEvent]:
        return self.handle_transmissions(self.open_block(block), now=now)

    def open_block(self, block: bytes) -> list[RawTransmission | CodecError]:
        """First half of :meth:`receive_block` (decrypt, unpad, split), public for diagnostics and tests.
        Every block must go through exactly once and in order: from v11 it advances the receive chain."""
        try:
            return parse_block(self.params, self._codec.open(block))
        except CodecError as e:
            raise SmpProtocolError(f"unusable block from the SMP server: {e}") from e

    def handle_transmissions(self, items: Sequence[RawTransmission | CodecError], *, now: float) -> list[E.SmpEvent]:
        """Second half of :meth:`receive_block`: one block's transmissions → events, in order."""
        self.last_received = now
        return [ev for item in items for ev in self._transmission(item)]

    def expire(self, *, now: float, timeout_s: float) -> list[E.SmpEvent]:
        """PINGs written before ``now - timeout_s`` and unanswered are given up; such NSUBs time out but
        their corrIds still take a late answer, and their queues are re-sent (:meth:`resend_due`)."""
        events: list[E.SmpEvent] = []
        for corr_id, p in list(self._pending.items()):
            if p.sent_at is None or now - p.sent_at < timeout_s:
                continue
            if p.timed_out:
                if now - p.sent_at >= STALE_AFTER_TIMEOUTS * timeout_s:
                    self._drop(corr_id)
                continue
            if p.kind is E.CommandKind.PING:
                self._drop(corr_id)
                events.append(E.PingTimedOut())
                continue
            if p.kind is E.CommandKind.NSUBS:  # the pool falls back to one NSUB per queue
                self._drop(corr_id)
                events.append(E.ServiceSubscriptionFailed(None, "timed out"))
                continue
            p.timed_out = True
            self._timed_out += 1
            nid = p.entity_id
            if self._live.get(nid) == corr_id:
                del self._live[nid]
            if self._move(nid, E.QueueEvent.TIMED_OUT) and p.queue is not None:
                self._schedule_resend(p.queue, now)
                events.append(E.SubscriptionTimedOut(nid))
        return events

    def _schedule_resend(self, q: NotifierQueue, now: float) -> None:
        attempt = r.attempt + 1 if (r := self._resend.get(q.notifier_id)) is not None else 1
        backoff = min(self._resend_cap_s, self._resend_base_s * 2 ** (attempt - 1))
        jitter = 0.5 + int.from_bytes(self._random(2), "big") / 131070  # 0.5 .. 1.0
        self._resend[q.notifier_id] = _Resend(q, attempt, now + backoff * jitter)

    def _drop(self, corr_id: bytes) -> _Pending | None:
        p = self._pending.pop(corr_id, None)
        if p is not None and p.timed_out:
            self._timed_out -= 1
        return p

    def awaiting(self) -> int:
        """Commands sent (or queued) whose answer is still expected in time (timed-out ones not counted)."""
        return len(self._pending) - self._timed_out

    def resends_waiting(self) -> int:
        """Queues whose NSUB timed out and that wait for (or are in) a re-send."""
        return len(self._resend)

    def _transmission(self, item: RawTransmission | CodecError) -> list[E.SmpEvent]:
        if isinstance(item, CodecError):
            return [E.Unexpected(b"", b"", f"unparseable transmission: {item}")]
        pending = self._drop(item.corr_id) if item.corr_id else None
        try:
            msg = self._parse(item)
        except CodecError as e:
            if pending is not None and pending.kind is E.CommandKind.NSUB:
                return self._failed(pending.entity_id, E.FailureKind.BAD_RESPONSE, None, str(e))
            if pending is not None and pending.kind is E.CommandKind.NSUBS:
                return [E.ServiceSubscriptionFailed(None, f"ResponseError {e}")]
            return [E.Unexpected(item.corr_id, item.entity_id, f"bad message: {e}")]
        if not item.corr_id:
            return self._event(item, msg)
        if pending is None:
            return [E.Unexpected(item.corr_id, item.entity_id, f"{type(msg).__name__} for an unknown corrId")]
        return self._response(pending, item, msg)

    def _parse(self, item: RawTransmission) -> S.BrokerMsg:
        if item.auth:
            raise CodecError("server transmissions are never authorized")
        if not self.params.implied_session_id and item.session_id != self.params.session_id:
            raise CodecError("wrong session id")
        msg = S.parse_broker_msg(item.command, self.version)
        if not S.check_broker_entity(msg, item.entity_id):
            raise CodecError(f"{type(msg).__name__} with a wrong entity id")
        return msg

    def _response(self, p: _Pending, item: RawTransmission, msg: S.BrokerMsg) -> list[E.SmpEvent]:
        if type(msg) is S.SOk and p.kind is E.CommandKind.NSUB and item.entity_id == p.entity_id:
            # the answer to nearly every NSUB, taken before the table and the match below (same result)
            return self._on_queue(p.entity_id, E.QueueEvent.SUBSCRIBED, E.Subscribed(p.entity_id, msg.service_id))
        outcome = E.RESPONSE_OUTCOMES.get((p.kind, type(msg)))
        if p.kind is E.CommandKind.NSUB and item.entity_id != p.entity_id:
            outcome = None  # an answer about another queue than the one asked for
        match outcome, msg:
            case E.Outcome.SUBSCRIBED, S.SOk(service_id):
                return self._on_queue(p.entity_id, E.QueueEvent.SUBSCRIBED, E.Subscribed(p.entity_id, service_id))
            case E.Outcome.SUBSCRIPTION_ERROR, S.SmpErr(error):
                return self._failed(p.entity_id, E.FailureKind.of_error(error), error, "")
            case E.Outcome.SERVICE_SUBSCRIBED, S.SOks(count, ids_hash):
                return [E.ServiceSubscribed(count, ids_hash)]
            case E.Outcome.SERVICE_ERROR, S.SmpErr(error):
                return [E.ServiceSubscriptionFailed(error)]
            case E.Outcome.PONG, _:
                return [E.Pong()]
            case E.Outcome.PING_ERROR, S.SmpErr(error):
                return [E.ServerError(item.corr_id, item.entity_id, error)]
        if p.kind is E.CommandKind.NSUB:
            return self._failed(p.entity_id, E.FailureKind.UNEXPECTED_RESPONSE, None, type(msg).__name__)
        if p.kind is E.CommandKind.NSUBS:
            return [E.ServiceSubscriptionFailed(None, f"UnexpectedResponse {type(msg).__name__}")]
        return [E.Unexpected(item.corr_id, item.entity_id, f"{type(msg).__name__} answering {p.kind.value}")]

    def _failed(self, q: bytes, kind: E.FailureKind, error: ErrorType | None, detail: str) -> list[E.SmpEvent]:
        return self._on_queue(q, E.QueueEvent.FAILED, E.SubscriptionFailed(q, kind, error, detail))

    def _event(self, item: RawTransmission, msg: S.BrokerMsg) -> list[E.SmpEvent]:
        q = item.entity_id
        match msg:
            case S.NMsg(nonce, enc_meta):
                state = self._queues.get(q, None if q in self._forgotten else E.QueueState.UNKNOWN)
                return [E.Message(q, nonce, enc_meta, state)]
            case S.End() | S.Deld() if self.service is not None and q not in self._queues:
                # A queue our NSUBS subscribed: tied queues are not tracked one by one here.
                return [E.Ended(q) if isinstance(msg, S.End) else E.Deleted(q)]
            case S.End():
                return self._on_queue(q, E.QueueEvent.END, E.Ended(q))
            case S.Deld():
                return self._on_queue(q, E.QueueEvent.DELD, E.Deleted(q))
            case S.Ends(count, ids_hash) if self.service is not None and q == self.service.service_id:
                return [E.ServiceEnded(count, ids_hash)]
            case S.SmpErr(error):
                return [E.ServerError(item.corr_id, q, error)]
        return [E.Unexpected(item.corr_id, q, f"{type(msg).__name__} without a corrId")]

    def _on_queue(self, q: bytes, event: E.QueueEvent, report: E.SmpEvent) -> list[E.SmpEvent]:
        if event in (E.QueueEvent.SUBSCRIBED, E.QueueEvent.FAILED) and self._queues.get(q) is not None:
            self._resend.pop(q, None)  # answered: no re-send (a live NSUB of it still gets its answer)
        if self._move(q, event):
            return [report]
        return [E.Unexpected(b"", q, f"{event.value} for a queue that is {self._queues.get(q) or 'not subscribed'}")]

    def _move(self, q: bytes, event: E.QueueEvent) -> bool:
        """Apply the table; False (state unchanged) when the pair is not in it."""
        ok, new = E.transition(self._queues.get(q), event)
        if ok and new is None:
            self._queues.pop(q, None)
        elif ok and new is not None:
            self._queues[q] = new
        return ok
