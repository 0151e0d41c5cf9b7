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
  each waiting for APNs' answer to one push; push/sending.py applies the answer (delivered, dead token,
  failure, or "retry later" → due again in the outbox after a backoff).
* **Retries from Redis.** push/outbox_keeper.py acknowledges answered pushes (batched) and claims the outbox
  entries that fell due (retries, and pushes of an instance that died while sending them), rebuilt from the
  token as it is now, and queues them here.
* **Schedulers and verification.** Deferred and periodic pushes are ``submit``-ted by their schedulers: the
  first try on the caller's task, a "retry later" to the outbox. Verification pushes (``send_verification``)
  have a queue and workers of their own, so a message backlog never delays a registration.
* **Graceful stop** (``drain``): after the SMP links stopped reading, every notice accepted is stored and
  every push queued is sent, for up to the grace; what is still unsent then is made due at once in the
  outbox, so the next start sends it. After kill -9 the outbox entries fall due when their lease ends.

Why one module of about 300 lines: the definitions of the metrics it counts sit at its head, beside the batch path
they count; sending and the outbox are already apart (sending.py, outbox_keeper.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from ntf_server.observability.logevents import emit, log_event
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter, Family, Gauge
from ntf_server.observability.stats import Stats
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.caps import DeviceCap, MemoryDeviceCap, SlidingCap
from ntf_server.push.intake import FairIntake
from ntf_server.push.model import DEFAULT_SETTINGS, VERIFICATION_PUSHES, PipelineSettings, Push
from ntf_server.push.outbox_keeper import STORE_RETRY_S, OutboxKeeper
from ntf_server.push.outcomes import PushSender
from ntf_server.push.policy import Decision
from ntf_server.push.sending import Sending
from ntf_server.store.base import NoticeStore, OutboxStore, TokenLookup, TokenStatusStore
from ntf_server.store.errors import StoreError
from ntf_server.store.notices import Decided, PolicyChanged
from ntf_server.store.outbox import PushKindCode
from ntf_server.store.records import Notice, PushProvider, TokenRecord

log = logging.getLogger(__name__)

HOUR_S: Final = 3600.0
POLICY_RETRIES: Final = 3
STORE_ATTEMPTS: Final = 20  # tries of one batch while Redis is away (~ a minute), then counted lost
RETRIES_WAITING: Final = Gauge("push_retries_waiting", "Pushes scheduled for a retry (APNs answered 429/5xx, timed "
                               "out or the connection dropped); grows while APNs is unwell")
# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
NTF_VRF_QUEUED: Final = Counter("ntf_vrf_queued", "Verification pushes queued", VERIFICATION_PUSHES, "queued")
NTF_VRF_CAPPED: Final = Counter("ntf_vrf_capped", "Verification pushes not sent: push.verifications_per_hour "
                                "reached for the device")
PUSH_QUEUE_FULL: Final = Counter("push_queue_full", "Verification pushes dropped because the push queue was full")
NTF_LOST_STORE: Final = Counter("ntf_lost_store", "NMSGs lost because the store stayed unavailable")
NTF_RECEIVED_INACTIVE: Final = Counter("ntf_received_inactive", "NMSGs for subscriptions whose token is not active")
NTF_RECEIVED_AUTH: Final = Counter("ntf_received_auth", "NMSGs for queues with no subscription here (Haskell "
                                   "ntfReceivedAuth)", per_server=True)
DECISIONS: Final = Family("message_push_decisions", "decision", "Message notifications by push policy decision "
                          "(hidden budget, overflow mode)")
NTF_HIDDEN: Final = Counter("ntf_hidden", "Message notifications pushed hidden (background), within the budget",
                            DECISIONS, "hidden")
NTF_ALERT: Final = Counter("ntf_alert", "Message notifications pushed as an alert", DECISIONS, "alert")
NTF_DEFERRED: Final = Counter("ntf_deferred", "Message notifications deferred over the budget (overflow = defer)",
                              DECISIONS, "deferred")
NTF_DROPPED: Final = Counter("ntf_dropped", "Message notifications dropped over the budget (overflow = drop)",
                             DECISIONS, "dropped")


_PLANNED: Final = {Decision.HIDDEN: NTF_HIDDEN, Decision.ALERT: NTF_ALERT, Decision.DEFER: NTF_DEFERRED,
                   Decision.DROP: NTF_DROPPED}
_CODE_OF: Final = {Decision.HIDDEN: PushKindCode.HIDDEN, Decision.ALERT: PushKindCode.ALERT}


class PipelineStore(NoticeStore, OutboxStore, TokenLookup, TokenStatusStore, Protocol):
    """What the pipeline needs of the store (store/base.py)."""


class PushPipeline:
    def __init__(self, store: PipelineStore, sender: PushSender, stats: Stats, hidden: HiddenPushes, *,
                 settings: PipelineSettings = DEFAULT_SETTINGS, clock: Callable[[], float] = time.time,
                 on_stored: Callable[[bytes], None] | None = None, vrf_cap: DeviceCap | None = None) -> None:
        """``vrf_cap``: verification pushes per device (store/vrfcap.py in the server; default: memory)."""
        self._store = store
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
        self._vrf_cap = vrf_cap or MemoryDeviceCap(SlidingCap(settings.verifications_per_hour, HOUR_S), clock)
        self.drops = CountedLog(log, "verification push not sent", level=logging.WARNING, event="push.not_sent")
        self.store_errors = CountedLog(log, "push outbox: store error", level=logging.WARNING,
                                       event="scheduler.store_error", fields={"part": "push retries"})
        self.outbox = OutboxKeeper(store, settings, clock, self.store_errors)
        stats.track(RETRIES_WAITING, lambda: self.outbox.waiting)
        self.sending = Sending(store, sender, stats, self.outbox, settings, clock, self.store_errors)

    def __repr__(self) -> str:
        return (f"<PushPipeline intake={self._intake.size} storing={self._storing} "
                f"outgoing={self._outgoing.qsize()} in_flight={self.in_flight} waiting={self.outbox.waiting}>")

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
            self._stats.incr(NTF_VRF_CAPPED)
            self.drops.event("over the per-device hourly cap")
            return
        try:
            self._verifications.put_nowait(token)
        except asyncio.QueueFull:
            self._stats.incr(PUSH_QUEUE_FULL)
            self.drops.event("push queue full")
            return
        if token.provider is not PushProvider.APNS_NULL:
            self._stats.incr(NTF_VRF_QUEUED)

    async def submit(self, push: Push) -> None:
        """A scheduler's push (deferred, periodic): the first try now, on the caller's task; a "retry later"
        goes to the outbox."""
        push.first_at = self._clock()
        await self.sending.attempt(push)

    @property
    def queue_length(self) -> int:
        return self._intake.size + self._outgoing.qsize() + self._verifications.qsize()

    @property
    def in_flight(self) -> int:
        """Message pushes decided and not yet answered by APNs (queued here or at APNs)."""
        return len(self.outbox.in_flight)

    @property
    def retries_waiting(self) -> int:
        return self.outbox.waiting

    @property
    def summary_logs(self) -> list[CountedLog]:
        """Every counted log of pushes (flushed by the server's "log summaries" part)."""
        return [self.drops, self.store_errors, *self.sending.summaries.values()]

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._batches(tg), name="push batches")
            for _ in range(self.settings.senders):
                tg.create_task(self._sends(), name="push sender")
            for _ in range(self.settings.verification_workers):
                tg.create_task(self._verification_sends(), name="verification sender")
            tg.create_task(self.outbox.run_acks(), name="push acks")
            tg.create_task(self.outbox.run_retries(self._outgoing.put), name="push retries")

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
            self._stats.incr(NTF_LOST_STORE, len(batch))
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
                if attempt == STORE_ATTEMPTS - 1 or self.outbox.closing:
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
        self._stats.incr(NTF_LOST_STORE, len(batch))
        log_event(log, "smp.notifications_lost", count=len(batch))
        return None

    async def _dispatch(self, batch: list[Notice], decided: list[Decided]) -> None:
        now = self._clock()
        stats = self._stats
        for notice, d in zip(batch, decided, strict=True):
            tok = d.token
            if d.decision is None or tok is None:
                if d.known:
                    stats.incr(NTF_RECEIVED_INACTIVE)
                else:
                    stats.incr_server(NTF_RECEIVED_AUTH, notice.server.hosts)
                continue
            if self._on_stored is not None:
                self._on_stored(tok.token_id)
            stats.incr(_PLANNED[d.decision])
            code = _CODE_OF.get(d.decision)
            if code is None:
                continue  # deferred (sent by the deferred scheduler) or dropped
            body = payload.message_body(tok.dh_secret, d.notices, hidden=code is PushKindCode.HIDDEN)
            self.outbox.in_flight.add(d.push_id)
            await self._outgoing.put(Push(code, tok, body, now, d.push_id, hosts=notice.server.hosts))

    async def _sends(self) -> None:
        while True:
            push = await self._outgoing.get()
            try:
                await self.sending.attempt(push)
            finally:
                self._outgoing.task_done()

    async def _verification_sends(self) -> None:
        while True:
            tok = await self._verifications.get()
            try:
                body = payload.verification_body(tok.dh_secret, payload.new_nonce(), tok.reg_code)
                await self.sending.attempt(Push(PushKindCode.VERIFICATION, tok, body, self._clock()))
            finally:
                self._verifications.task_done()

    # ------------------------------------------------------------ stopping

    async def drain(self, grace_s: float | None = None) -> bool:
        """Graceful stop, after the SMP links stopped reading: store every accepted notice and send every
        queued push for up to the grace; what is left is made due at once in the outbox for the next start.
        Returns True when everything was sent."""
        self.outbox.closing = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        finished = True
        try:
            async with asyncio.timeout(grace):
                await self.wait_idle()
        except TimeoutError:
            finished = False
        left = await self.outbox.release()
        log_event(log, "push.stopped", waiting=self.outbox.waiting, in_flight=left)
        return finished and not left

    async def wait_idle(self) -> None:
        """Until nothing accepted is unstored and nothing queued is unsent (this process's part only)."""
        while True:
            await self._outgoing.join()  # a queue's join also waits for the item being worked on
            await self._verifications.join()
            if not (self._intake.size or self._storing or self.outbox.in_flight or self._outgoing.qsize()
                    or self._verifications.qsize()):
                break
            await asyncio.sleep(0.005)
        await self.outbox.flush_acks()

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Until nothing is queued here and no push waits in the outbox (tests; the outbox is shared)."""
        async with asyncio.timeout(timeout_s):
            while True:
                await self.wait_idle()
                if await self._store.outbox.count() == 0 and not self.outbox.in_flight:
                    return
                self.outbox.poke()
                await asyncio.sleep(0.01)
