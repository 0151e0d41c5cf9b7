"""The push pipeline: notices in from the SMP links, pushes out to APNs, nothing accepted lost (§5.7–5.9).

Theory of operation.

* **Intake, fair per SMP server.** ``accept(server, notices)`` queues the notices of one SMP block under their
  server and returns; it waits while that server already has ``intake_per_server`` notices waiting, and that
  link then reads nothing more from its SMP server (which keeps what it has not delivered): back-pressure
  on the server that floods, never on the others, and never a silent drop.
* **One round trip per batch (group commit).** A batcher takes up to ``batch_max`` notices, a fair share from
  each server with notices waiting, as soon as fewer than ``store_calls`` store calls are in flight: one
  block alone when all is quiet, every block that arrived meanwhile under load. One script stores the whole
  batch, reads the tokens, decides each push against the budget and the policy in effect, writes the pushes
  to the outbox and answers each push's notices, fixed now: the notice that caused it, last, after up to 5
  newer or other ones of its token (store/notices.py). Nothing else on the way to APNs touches Redis.
* **Sending.** Bodies are built at once (push/payload.py owns the nonces) and queued for ``senders`` tasks,
  each waiting for APNs' answer to one push. The answer is applied: delivered, a dead token (INVALID) or a
  failure → the outbox entry is acknowledged (batched: one call per burst of answers); "retry later" → the
  entry is due again after a capped, jittered backoff (until ``deadline_s`` from the first try, then counted
  failed). Store calls made per push on these paths (confirm, invalid, retry) pass a gate of ``store_gate``.
* **Retries from Redis.** A scheduler claims the outbox entries that fell due (retries, and pushes of an
  instance that died while sending them: their lease ran out), builds each push again from its kind, its
  token as it is now (a token deleted or no longer ACTIVE gets nothing) and its cause, and queues it. The
  same loop extends the claims of the pushes this process still holds, every third of a lease, so another
  instance never claims a push this one is still sending (queued, or at a slow APNs).
* **Schedulers and verification.** Deferred and periodic pushes are ``submit``-ted by their schedulers: the
  first try on the caller's task, a "retry later" to the outbox. Verification pushes (``send_verification``)
  have a queue and workers of their own, so a message backlog never delays a registration.
* **Graceful stop** (``drain``): after the SMP links stopped reading, every notice accepted is stored and
  every push queued is sent, for up to the grace; what is still unsent then is made due at once in the
  outbox, so the next start sends it. After kill -9 the outbox entries fall due when their lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol, assert_never

from ntf_server.logevents import emit, log_event
from ntf_server.logsummary import CountedLog
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.caps import DeviceCap, MemoryDeviceCap, SlidingCap
from ntf_server.push.intake import FairIntake
from ntf_server.push.model import (
    BACKGROUND,
    DEFAULT_SETTINGS,
    KIND_OF,
    MESSAGE,
    PERIODIC,
    VERIFICATION,
    PipelineSettings,
    Push,
)
from ntf_server.push.outcomes import Delivered, Failed, Invalid, PushSender, RetryLater
from ntf_server.push.policy import Decision
from ntf_server.sensitive import TokenId
from ntf_server.stats import Stat, Stats
from ntf_server.store.base import NoticeStore, OutboxStore, TokenLookup, TokenStatusStore
from ntf_server.store.errors import StoreError
from ntf_server.store.notices import Decided, PolicyChanged
from ntf_server.store.outbox import OutboxEntry, PushKindCode
from ntf_server.store.records import (
    MAX_NOTICES,
    Notice,
    PushProvider,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

HOUR_S: Final = 3600.0
POLICY_RETRIES: Final = 3
STORE_ATTEMPTS: Final = 20  # tries of one batch while Redis is away (~ a minute), then counted lost
STORE_RETRY_S: Final = 3.0
ACK_PACE_S: Final = 0.01


_PLANNED: Final = {Decision.HIDDEN: Stat.NTF_HIDDEN, Decision.ALERT: Stat.NTF_ALERT,
                   Decision.DEFER: Stat.NTF_DEFERRED, Decision.DROP: Stat.NTF_DROPPED}
_CODE_OF: Final = {Decision.HIDDEN: PushKindCode.HIDDEN, Decision.ALERT: PushKindCode.ALERT}


class PipelineStore(NoticeStore, OutboxStore, TokenLookup, TokenStatusStore, Protocol):
    """What the pipeline needs of the store (store/base.py)."""


class PushPipeline:
    def __init__(self, store: PipelineStore, sender: PushSender, stats: Stats, hidden: HiddenPushes, *,
                 settings: PipelineSettings = DEFAULT_SETTINGS, clock: Callable[[], float] = time.time,
                 on_stored: Callable[[bytes], None] | None = None, vrf_cap: DeviceCap | None = None) -> None:
        """``vrf_cap``: verification pushes per device (store/vrfcap.py in the server; default: memory)."""
        self._store = store
        self._sender = sender
        self._stats = stats
        self.hidden = hidden
        self.settings = settings
        self._clock = clock
        self._on_stored = on_stored  # token id of each notice stored for an ACTIVE token (active-token counts)
        self._intake = FairIntake(settings.intake_per_server)
        self._calls = asyncio.Semaphore(settings.store_calls)
        self._storing = 0
        self._outgoing: asyncio.Queue[Push] = asyncio.Queue(settings.outgoing)
        self._verifications: asyncio.Queue[TokenRecord] = asyncio.Queue(settings.verification_queue)
        self._gate = asyncio.Semaphore(settings.store_gate)
        self._vrf_cap = vrf_cap or MemoryDeviceCap(SlidingCap(settings.verifications_per_hour, HOUR_S), clock)
        self._in_flight: set[int] = set()  # outbox ids queued or being sent by this process
        self._acks: list[int] = []
        self._ack_wake = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._next_claim = 0.0
        self._next_extend = 0.0  # when the claims of the pushes held here are extended next
        self._extending: frozenset[int] = frozenset()  # the ids whose claims are being extended now
        self._extensions = 0  # extensions started so far
        self._extended = asyncio.Event()  # set while no extension is in progress
        self._extended.set()
        self._closing = False
        self.waiting = 0  # outbox entries waiting for a retry (a gauge, refreshed by the retry scheduler)
        self.summaries = {k: CountedLog(log, f"{k.name} failed", event="push.failed",
                                         fields={"kind": k.name.lower()}) for k in (VERIFICATION, MESSAGE, PERIODIC)}
        self.drops = CountedLog(log, "verification push not sent", level=logging.WARNING, event="push.not_sent")
        self.store_errors = CountedLog(log, "push outbox: store error", level=logging.WARNING,
                                       event="scheduler.store_error", fields={"part": "push retries"})

    def __repr__(self) -> str:
        return (f"<PushPipeline intake={self._intake.size} storing={self._storing} "
                f"outgoing={self._outgoing.qsize()} in_flight={len(self._in_flight)} waiting={self.waiting}>")

    # ------------------------------------------------------------ entries

    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None:
        """The notices of one SMP block; waits while this server has a full share waiting (back-pressure)."""
        if notices:
            await self._intake.put(server, notices)

    async def send_verification(self, token: TokenRecord) -> None:
        """Queue a verification push without waiting for it (the NTF connection never blocks on APNs; it
        awaits only the per-device cap, one Redis call in the server: store/vrfcap.py)."""
        null = token.provider is PushProvider.APNS_NULL
        if not null and not await self._vrf_cap.allow(token.provider, token.device_token):
            self._stats.incr(Stat.NTF_VRF_CAPPED)
            self.drops.event("over the per-device hourly cap")
            return
        try:
            self._verifications.put_nowait(token)
        except asyncio.QueueFull:
            self._stats.incr(Stat.PUSH_QUEUE_FULL)
            self.drops.event("push queue full")
            return
        if token.provider is not PushProvider.APNS_NULL:
            self._stats.incr(Stat.NTF_VRF_QUEUED)

    async def submit(self, push: Push) -> None:
        """A scheduler's push (deferred, periodic): the first try now, on the caller's task; a "retry later"
        goes to the outbox."""
        push.first_at = self._clock()
        await self._attempt(push)

    @property
    def queue_length(self) -> int:
        return self._intake.size + self._outgoing.qsize() + self._verifications.qsize()

    @property
    def in_flight(self) -> int:
        """Message pushes decided and not yet answered by APNs (queued here or at APNs)."""
        return len(self._in_flight)

    @property
    def retries_waiting(self) -> int:
        return self.waiting

    @property
    def summary_logs(self) -> list[CountedLog]:
        """Every counted log of pushes (flushed by the server's "log summaries" part)."""
        return [self.drops, self.store_errors, *self.summaries.values()]

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._batches(tg), name="push batches")
            for _ in range(self.settings.senders):
                tg.create_task(self._sends(), name="push sender")
            for _ in range(self.settings.verification_workers):
                tg.create_task(self._verification_sends(), name="verification sender")
            tg.create_task(self._ack_loop(), name="push acks")
            tg.create_task(self._retry_loop(), name="push retries")

    async def _batches(self, tg: asyncio.TaskGroup) -> None:
        while True:
            await self._intake.ready.wait()
            await self._calls.acquire()
            batch = self._intake.take(self.settings.batch_max)
            if not batch:
                self._calls.release()
                continue
            self._storing += 1
            tg.create_task(self._store_batch(batch))

    async def _store_batch(self, batch: list[Notice]) -> None:
        try:
            decided = await self._decide(batch)
            if decided is not None:
                await self._dispatch(batch, decided)
        except Exception as e:  # a bug in one batch must not stop the pipeline (and with it all pushes)
            emit(log, "push.unexpected_error", {"error": type(e).__name__}, exc_info=True)
            self._stats.incr(Stat.NTF_LOST_STORE, len(batch))
        finally:
            self._storing -= 1
            self._calls.release()

    async def _decide(self, batch: list[Notice]) -> list[Decided] | None:
        """Store and decide ``batch`` (store/notices.py), retrying while Redis is away or the policy changed."""
        changes = 0
        for attempt in range(STORE_ATTEMPTS):
            budgets, policy = self.hidden.in_effect
            try:
                res = await self._store.notify(batch, budgets, self.hidden.clock(), policy, self.settings.lease_s,
                                               self._clock())
            except StoreError as e:
                if attempt == STORE_ATTEMPTS - 1 or self._closing:
                    break
                log.debug("push pipeline: store call failed (%s), retrying", type(e).__name__)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if isinstance(res, PolicyChanged):
                self.hidden.seen(res.raw)
                changes += 1
                if changes < POLICY_RETRIES:
                    continue
                break  # one admin PUT per batch: not a real case
            return res
        self._stats.incr(Stat.NTF_LOST_STORE, len(batch))
        log_event(log, "smp.notifications_lost", count=len(batch))
        return None

    async def _dispatch(self, batch: list[Notice], decided: list[Decided]) -> None:
        now = self._clock()
        stats = self._stats
        for notice, d in zip(batch, decided, strict=True):
            tok = d.token
            if d.decision is None or tok is None:
                if d.known:
                    stats.incr(Stat.NTF_RECEIVED_INACTIVE)
                else:
                    stats.incr_server(Stat.NTF_RECEIVED_AUTH, notice.server.hosts)
                continue
            if self._on_stored is not None:
                self._on_stored(tok.token_id)
            stats.incr(_PLANNED[d.decision])
            code = _CODE_OF.get(d.decision)
            if code is None:
                continue  # deferred (sent by the deferred scheduler) or dropped
            body = payload.message_body(tok.dh_secret, d.notices, hidden=code is PushKindCode.HIDDEN)
            self._in_flight.add(d.push_id)
            await self._outgoing.put(Push(code, tok, body, now, d.push_id, hosts=notice.server.hosts))

    async def _sends(self) -> None:
        while True:
            push = await self._outgoing.get()
            try:
                await self._attempt(push)
            finally:
                self._outgoing.task_done()

    async def _verification_sends(self) -> None:
        while True:
            tok = await self._verifications.get()
            try:
                body = payload.verification_body(tok.dh_secret, payload.new_nonce(), tok.reg_code)
                await self._attempt(Push(PushKindCode.VERIFICATION, tok, body, self._clock()))
            finally:
                self._verifications.task_done()

    # ------------------------------------------------------------ one try and its outcome

    async def _attempt(self, push: Push) -> None:
        try:
            await self._try(push)
        except StoreError as e:  # its outbox entry stays, due when its lease ends: a claim sends it again
            self.store_errors.event(type(e).__name__)
            self._in_flight.discard(push.outbox_id)
        except Exception as e:  # a bug in one push must not stop the task (and with it all pushes)
            emit(log, "push.unexpected_error", {"error": type(e).__name__}, exc_info=True)
            self._count(push, push.kind.failed)
            self._done(push)

    async def _try(self, push: Push) -> None:
        tok, kind = push.token, push.kind
        outcome = await self._sender.push(tok.provider, tok.device_token, push.body,
                                          background=push.code in BACKGROUND)
        match outcome:
            case Delivered():
                if kind.confirms:
                    async with self._gate:
                        await self._store.confirm_token(tok.token_id)
                if tok.provider is not PushProvider.APNS_NULL:
                    self._count(push, kind.delivered)
                self._done(push)
            case RetryLater(reason, after_s):
                await self._retry_later(push, reason, after_s)
            case Invalid(reason):
                self._count(push, kind.failed)
                self._stats.incr(kind.invalid)
                async with self._gate:
                    await self._store.set_token_status(tok.token_id, TokenStatus(TokenStatusKind.INVALID, reason))
                log_event(log, "push.token_invalid", kind=kind.name.lower(), reason=reason.value,
                          token=TokenId(tok.token_id))
                self.summaries[kind].event(f"invalid token {reason.value}")
                self._done(push)
            case Failed(reason):
                self._failed(push, reason)
            case _:
                assert_never(outcome)

    def _count(self, push: Push, stat: Stat) -> None:
        if push.hosts:
            self._stats.incr_server(stat, push.hosts)
        else:
            self._stats.incr(stat)

    def _failed(self, push: Push, reason: str) -> None:
        self._count(push, push.kind.failed)
        log_event(log, "push.gave_up", kind=push.kind.name.lower(), reason=reason, token=TokenId(push.token.token_id))
        self.summaries[push.kind].event(reason)
        self._done(push)

    def _done(self, push: Push) -> None:
        """Answered for good: its outbox entry goes (batched)."""
        if push.outbox_id:
            self._in_flight.discard(push.outbox_id)
            self._acks.append(push.outbox_id)
            self._ack_wake.set()

    async def _retry_later(self, push: Push, reason: str, after_s: float) -> None:
        kind, now, tries = push.kind, self._clock(), push.tries + 1
        due = now + max(0.0, self.settings.backoff.delay_s(tries, after_s))
        if due > push.first_at + self.settings.deadline_s:
            self._stats.incr(kind.expired)
            self._failed(push, f"retry deadline passed ({reason})")
            return
        async with self._gate:
            if push.outbox_id:
                started = self._extensions
                await self._store.outbox_retry(push.outbox_id, due, tries)
                if push.outbox_id in self._extending or self._extensions != started:
                    await self._extended.wait()  # an extension of its claim may have run after it: once more
                    await self._store.outbox_retry(push.outbox_id, due, tries)
                self._in_flight.discard(push.outbox_id)
            else:
                await self._store.outbox_add(push.code, push.token.token_id, push.first_at, due, tries)
        self._stats.incr(kind.retried)
        log_event(log, "push.retry", kind=kind.name.lower(), attempt=tries, reason=reason,
                  token=TokenId(push.token.token_id))
        if due < self._next_claim:
            self._retry_wake.set()

    # ------------------------------------------------------------ the outbox: acks and retries

    async def _ack_loop(self) -> None:
        """Acknowledgements wait up to ``ACK_PACE_S`` to share a call (they are not on anyone's path: an
        entry acknowledged late is at worst sent again after its lease, by a claim)."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            if len(self._acks) < self.settings.retry_batch:
                await asyncio.sleep(ACK_PACE_S)
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        ids, self._acks = self._acks, []
        if not ids:
            return
        try:
            await self._store.outbox_ack(ids)
        except StoreError as e:  # kept for the next flush; until then a claim may send them again
            self.store_errors.event(type(e).__name__)
            self._acks = ids + self._acks
            await asyncio.sleep(STORE_RETRY_S)
            self._ack_wake.set()

    async def _retry_loop(self) -> None:
        s = self.settings
        while True:
            delay = s.retry_scan_s
            try:
                # a draining process claims nothing more: what it releases is for the next start
                entries = [] if self._closing else await self._store.outbox_claim(self._clock(), s.lease_s,
                                                                                  s.retry_batch)
                for e in entries:
                    await self._resend(e)
                delay = min(delay, await self._extend_claims())
                self.waiting = max(0, await self._store.outbox_count() - len(self._in_flight))
                if len(entries) >= s.retry_batch:
                    delay = 0.0
            except StoreError as e:
                self.store_errors.event(type(e).__name__)
            self._next_claim = self._clock() + delay
            self._retry_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_wake.wait()

    async def _extend_claims(self) -> float:
        """Every third of a lease, the claims of the pushes this process still holds are extended by one
        lease (another instance would send them again after it); returns the time until the next time."""
        lease = self.settings.lease_s
        if self._clock() >= self._next_extend and self._in_flight and not self._closing:
            # a retry or release of one of these meanwhile waits for the extension and is applied again
            self._extending, self._extended = frozenset(self._in_flight), asyncio.Event()
            self._extensions += 1
            try:
                await self._store.outbox_extend(sorted(self._extending), self._clock() + lease)
            finally:
                self._extending = frozenset()
                self._extended.set()
            self._next_extend = self._clock() + lease / 3
        return max(self._next_extend - self._clock(), 0.0) if self._in_flight else lease / 3

    async def _resend(self, e: OutboxEntry) -> None:
        """An outbox entry fell due: build its push again from the token as it is now, and queue it."""
        push = await self._rebuild(e)
        if push is None:
            log_event(log, "push.retry_dropped", kind=KIND_OF[e.kind].name.lower(), token=TokenId(e.token_id))
            self._acks.append(e.id)
            self._ack_wake.set()
            return
        self._in_flight.add(e.id)
        await self._outgoing.put(push)

    async def _rebuild(self, e: OutboxEntry) -> Push | None:
        if e.kind is PushKindCode.VERIFICATION:
            tok = await self._store.get_token(e.token_id)
            if tok is None:
                return None
            body = payload.verification_body(tok.dh_secret, payload.new_nonce(), tok.reg_code)
            return Push(e.kind, tok, body, e.first_at, e.id, e.tries)
        got = await self._store.for_retry(e.token_id, e.cause)
        tok = got.token
        if tok is None or tok.status.kind is not TokenStatusKind.ACTIVE:
            return None  # §5.7: a token deleted or no longer ACTIVE meanwhile is not pushed to
        if e.kind in (PushKindCode.ALERT, PushKindCode.HIDDEN):
            cause = got.cause
            if cause is None:
                return None  # its subscription was deleted meanwhile (SDEL/TDEL)
            others = [n for n in got.notices if n.nonce != cause.nonce]
            notices = (*others[-(MAX_NOTICES - 1):], cause)
            body = payload.message_body(tok.dh_secret, notices, hidden=e.kind is PushKindCode.HIDDEN)
            return Push(e.kind, tok, body, e.first_at, e.id, e.tries, hosts=cause.server.hosts)
        body = payload.message_body(tok.dh_secret, got.notices, hidden=True)
        return Push(e.kind, tok, body, e.first_at, e.id, e.tries)

    # ------------------------------------------------------------ stopping

    async def drain(self, grace_s: float | None = None) -> bool:
        """Graceful stop, after the SMP links stopped reading: store every accepted notice and send every
        queued push for up to the grace; what is left is made due at once in the outbox for the next start.
        Returns True when everything was sent."""
        self._closing = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        finished = True
        try:
            async with asyncio.timeout(grace):
                await self.wait_idle()
        except TimeoutError:
            finished = False
        await self._extended.wait()  # no extension runs after the release below (none starts once closing)
        left = sorted(self._in_flight)
        with contextlib.suppress(StoreError):
            if left:
                await self._store.outbox_release(left, self._clock())
            await self._flush_acks()
        log_event(log, "push.stopped", waiting=self.waiting, in_flight=len(left))
        return finished and not left

    async def wait_idle(self) -> None:
        """Until nothing accepted is unstored and nothing queued is unsent (this process's part only)."""
        while True:
            await self._outgoing.join()  # a queue's join also waits for the item being worked on
            await self._verifications.join()
            if not (self._intake.size or self._storing or self._in_flight or self._outgoing.qsize()
                    or self._verifications.qsize()):
                break
            await asyncio.sleep(0.005)
        await self._flush_acks()

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Until nothing is queued here and no push waits in the outbox (tests; the outbox is shared)."""
        async with asyncio.timeout(timeout_s):
            while True:
                await self.wait_idle()
                if await self._store.outbox_count() == 0 and not self._in_flight:
                    return
                self._retry_wake.set()
                await asyncio.sleep(0.01)
