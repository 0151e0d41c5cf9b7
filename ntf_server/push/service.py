"""Push delivery: a bounded queue, workers, APNs outcomes turned into token status and counters (§5.8–5.9).

Theory of operation: handlers enqueue without waiting for the push (``send_verification`` awaits only the
per-device cap, one Redis call; a full queue is counted and the push dropped, and the client's repeat TNEW
re-sends it).
Message notifications (spec §5.7, SimpleX parity: every NMSG → one mutable-content alert carrying the
token's newest ≤ 6 notifications) go through a second bounded queue, whose ``send_messages`` *waits* for
room: a full queue slows the SMP reader that feeds it, and the SMP server keeps what is not read, so no
notification is dropped silently. Verification pushes have their own queue and workers, so a message
backlog never delays a registration. Workers build the body (push/payload.py, pure), hand it to a
``Delivery`` (push/delivery.py), which sends it and applies the outcome: delivered → CONFIRMED
(verification) or counted, "token invalid" → ``INVALID,<reason>``, "retry later" → retried with backoff
until a deadline without holding the worker, anything else → counted failure. Verification pushes are
capped per device token per hour (push/caps.py; over the cap: counted, not sent). What a message
notification becomes (hidden push, alert, deferred, dropped) is the push policy's decision (push/budget.py,
push/policy.py); the deferred and periodic pushes it schedules are sent through ``deliver`` too
(push/deferred.py, push/cron.py), so they get the same retries.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from ntf_server.logevents import emit, log_event
from ntf_server.logsummary import CountedLog
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes, Plan, alert_body, pn_messages
from ntf_server.push.caps import DeviceCap, MemoryDeviceCap, SlidingCap
from ntf_server.push.delivery import MESSAGE, VERIFICATION, Delivery, DeliverySettings, Push, PushKind
from ntf_server.push.outcomes import Delivered, Failed, Invalid, Outcome, PushSender, RetryLater
from ntf_server.push.policy import Decision
from ntf_server.stats import Stat, Stats
from ntf_server.store.base import PushTokenStore
from ntf_server.store.errors import StoreError
from ntf_server.store.records import LastNotification, PushProvider, TokenRecord

log = logging.getLogger(__name__)
J = TypeVar("J")

QUEUE_SIZE: Final = 32768  # pushQSize (verification pushes: dropped, counted, when full)
# Message pushes wait when full, and the SMP reader waits with them: a queue of ~2 s of pushes lets the SMP
# servers hold a backlog instead of us (32768 meant 15-20 s of latency under overload, tests/bench/nmsg_pipeline.py).
MESSAGE_QUEUE_SIZE: Final = 4096
# Message pushes in flight. Each worker waits for APNs' answer (ms; APNs takes 1000 streams a connection):
# 4 capped a 2-core machine at ~550 pushes/s with a growing backlog (tests/bench/nmsg_pipeline.py).
MESSAGE_WORKERS: Final = 64
NONCE_BYTES: Final = 24
HOUR_S: Final = 3600.0
DEFAULT_DELIVERY: Final = DeliverySettings()
_PLANNED: Final = {Decision.HIDDEN: Stat.NTF_HIDDEN, Decision.ALERT: Stat.NTF_ALERT,
                   Decision.DEFER: Stat.NTF_DEFERRED, Decision.DROP: Stat.NTF_DROPPED}

__all__ = ["Delivered", "Failed", "Invalid", "MessagePush", "Outcome", "PushSender", "PushService", "RetryLater"]


@dataclass(frozen=True, slots=True)
class MessagePush:
    token: TokenRecord
    notifications: tuple[LastNotification, ...]  # oldest first, the one that caused the push last


class PushService:
    def __init__(self, store: PushTokenStore, sender: PushSender, stats: Stats, *, workers: int = 4,
                 message_workers: int = MESSAGE_WORKERS, queue_size: int = QUEUE_SIZE,
                 delivery: DeliverySettings = DEFAULT_DELIVERY, clock: Callable[[], float] = time.monotonic,
                 hidden: HiddenPushes | None = None, vrf_cap: DeviceCap | None = None) -> None:
        """``vrf_cap``: verification pushes per device (store/vrfcap.py; default: this instance's memory)."""
        self.hidden = hidden  # the push policy; None = SimpleX parity (every notification an alert)
        self._store = store
        self._delivery = Delivery(store, sender, stats, delivery, clock=clock)
        self._vrf_cap = vrf_cap or MemoryDeviceCap(SlidingCap(delivery.verifications_per_hour, HOUR_S), clock)
        self._clock = clock
        self._stats = stats
        self._workers = workers
        self._message_workers = message_workers
        self._queue: asyncio.Queue[TokenRecord] = asyncio.Queue(queue_size)
        self._messages: asyncio.Queue[MessagePush] = asyncio.Queue(min(queue_size, MESSAGE_QUEUE_SIZE))
        self.failures = self._delivery.summaries[VERIFICATION]
        self.drops = CountedLog(log, "verification push not sent", level=logging.WARNING, event="push.not_sent")
        self.message_failures = self._delivery.summaries[MESSAGE]

    async def send_verification(self, token: TokenRecord) -> None:
        null = token.provider is PushProvider.APNS_NULL
        if not null and not await self._vrf_cap.allow(token.provider, token.device_token):
            self._stats.incr(Stat.NTF_VRF_CAPPED)
            self.drops.event("over the per-device hourly cap")
            return
        try:
            self._queue.put_nowait(token)
        except asyncio.QueueFull:
            self._stats.incr(Stat.PUSH_QUEUE_FULL)
            self.drops.event("push queue full")
            return
        if token.provider is not PushProvider.APNS_NULL:
            self._stats.incr(Stat.NTF_VRF_QUEUED)

    async def send_messages(self, token: TokenRecord, notifications: Sequence[LastNotification]) -> None:
        """Queue one message push; waits while the queue is full (back-pressure on the caller)."""
        await self._messages.put(MessagePush(token, tuple(notifications)))

    @property
    def summaries(self) -> list[CountedLog]:
        """Every counted log of pushes (flushed by the server's "log summaries" part)."""
        return [self.drops, *self._delivery.summaries.values()]

    @property
    def queue_length(self) -> int:
        return self._queue.qsize() + self._messages.qsize()

    @property
    def retries_waiting(self) -> int:
        """Pushes waiting for a retry (a gauge: grows while APNs answers 429/5xx or cannot be reached)."""
        return self._delivery.waiting

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._workers):
                tg.create_task(self._work(self._queue, self._verify, Stat.NTF_VRF_FAILED))
            for _ in range(self._message_workers):
                tg.create_task(self._work(self._messages, self._message, Stat.NTF_FAILED))
            tg.create_task(self._delivery.run())

    async def _work(self, queue: asyncio.Queue[J], push: Callable[[J], Awaitable[None]], failed: Stat) -> None:
        while True:
            job = await queue.get()
            try:
                await push(job)
            except StoreError as e:
                log_event(log, "push.store_error", error=type(e).__name__)
            except Exception as e:  # a bug in one push must not stop the worker (and with it all pushes)
                emit(log, "push.unexpected_error", {"error": type(e).__name__}, exc_info=True)
                self._stats.incr(failed)
            finally:
                queue.task_done()

    async def _message(self, job: MessagePush) -> None:
        """One message notification: the policy decides (push/budget.py); parity mode without a policy."""
        tok = job.token
        if self.hidden is None:
            plan: Plan | None = Plan(Decision.ALERT, alert_body(tok, pn_messages(job.notifications)))
        else:
            plan = await self.hidden.plan(tok, job.notifications)
        if plan is None:
            return  # the token was deleted meanwhile
        self._stats.incr(_PLANNED[plan.decision])
        if plan.body:
            hosts = job.notifications[-1].server.hosts if job.notifications else ()
            await self.deliver(tok, plan.body, background=plan.background, hosts=hosts)

    async def deliver(self, tok: TokenRecord, body: bytes, *, background: bool, kind: PushKind = MESSAGE,
                      hosts: Sequence[str] = ()) -> None:
        """Send one message-kind push (message, deferred, periodic): first try now, retries scheduled
        (push/delivery.py); the outcome is counted under ``kind`` (and per own SMP server ``hosts``)."""
        await self._delivery.send(Push(kind, tok, body, background=background, hosts=tuple(hosts)))

    async def drain(self) -> None:
        """Wait until every queued push was handled, retries included (tests, graceful shutdown)."""
        await self._queue.join()
        await self._messages.join()
        await self._delivery.idle()

    async def _verify(self, tok: TokenRecord) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = payload.verification_body(tok.dh_secret, nonce, tok.reg_code)
        await self._delivery.send(Push(VERIFICATION, tok, body, background=True))
