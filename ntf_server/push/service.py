"""Push delivery: a bounded queue, workers, APNs outcomes turned into token status and counters (§5.8–5.9).

Theory of operation: handlers enqueue without waiting (``send_verification`` never blocks the NTF
connection; a full queue is counted and the push dropped, and the client's repeat TNEW re-sends it).
Message notifications (spec §5.7, SimpleX parity: every NMSG → one mutable-content alert carrying the
token's newest ≤ 6 notifications) go through a second bounded queue, whose ``send_messages`` *waits* for
room: a full queue slows the SMP reader that feeds it, and the SMP server keeps what is not read, so no
notification is dropped silently. Verification pushes have their own queue and workers, so a message
backlog never delays a registration. Workers build the body (push/payload.py, pure), hand it to a
``PushSender`` and apply the outcome: delivered → CONFIRMED (verification) or counted, "token invalid" →
``INVALID,<reason>``, anything else → counted failure. What a message notification becomes (hidden push,
alert, deferred, dropped) is the push policy's decision (push/budget.py, push/policy.py); the deferred and
periodic pushes it schedules are sent through ``deliver`` too (push/deferred.py, push/cron.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from ntf_server.logsummary import CountedLog
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes, Plan, alert_body, pn_messages
from ntf_server.push.policy import Decision
from ntf_server.stats import Stat, Stats
from ntf_server.store.base import Store
from ntf_server.store.errors import StoreError
from ntf_server.store.records import (
    InvalidReason,
    LastNotification,
    PushProvider,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)

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
_PLANNED: Final = {Decision.HIDDEN: Stat.NTF_HIDDEN, Decision.ALERT: Stat.NTF_ALERT,
                   Decision.DEFER: Stat.NTF_DEFERRED, Decision.DROP: Stat.NTF_DROPPED}


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: InvalidReason


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


Outcome = Delivered | Invalid | Failed


@dataclass(frozen=True, slots=True)
class MessagePush:
    token: TokenRecord
    notifications: tuple[LastNotification, ...]  # oldest first, the one that caused the push last


class PushSender(Protocol):
    async def push(self, provider: PushProvider, device_token: bytes, body: bytes, *, background: bool) -> Outcome:
        ...


class PushService:
    def __init__(self, store: Store, sender: PushSender, stats: Stats, *, workers: int = 4,
                 message_workers: int = MESSAGE_WORKERS, queue_size: int = QUEUE_SIZE,
                 hidden: HiddenPushes | None = None) -> None:
        self.hidden = hidden  # the push policy; None = SimpleX parity (every notification an alert)
        self._store = store
        self._sender = sender
        self._stats = stats
        self._workers = workers
        self._message_workers = message_workers
        self._queue: asyncio.Queue[TokenRecord] = asyncio.Queue(queue_size)
        self._messages: asyncio.Queue[MessagePush] = asyncio.Queue(min(queue_size, MESSAGE_QUEUE_SIZE))
        # one line per token would let a client flood the log (issue 8): per-token detail at debug only
        self.failures = CountedLog(log, "verification push failed")
        self.drops = CountedLog(log, "push queue full: verification push dropped", level=logging.WARNING)
        self.message_failures = CountedLog(log, "message push failed")

    def send_verification(self, token: TokenRecord) -> None:
        try:
            self._queue.put_nowait(token)
        except asyncio.QueueFull:
            self._stats.incr(Stat.PUSH_QUEUE_FULL)
            self.drops.event("queue full")
            return
        if token.provider is not PushProvider.APNS_NULL:
            self._stats.incr(Stat.NTF_VRF_QUEUED)

    async def send_messages(self, token: TokenRecord, notifications: Sequence[LastNotification]) -> None:
        """Queue one message push; waits while the queue is full (back-pressure on the caller)."""
        await self._messages.put(MessagePush(token, tuple(notifications)))

    @property
    def queue_length(self) -> int:
        return self._queue.qsize() + self._messages.qsize()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._workers):
                tg.create_task(self._work(self._queue, self._verify, Stat.NTF_VRF_FAILED))
            for _ in range(self._message_workers):
                tg.create_task(self._work(self._messages, self._message, Stat.NTF_FAILED))

    async def _work(self, queue: asyncio.Queue[J], push: Callable[[J], Awaitable[None]], failed: Stat) -> None:
        while True:
            job = await queue.get()
            try:
                await push(job)
            except StoreError as e:
                log.warning("store error after a push: %s", type(e).__name__)
            except Exception:  # a bug in one push must not stop the worker (and with it all pushes)
                log.exception("push failed unexpectedly")
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
            await self.deliver(tok, plan.body, background=plan.background)

    async def deliver(self, tok: TokenRecord, body: bytes, *, background: bool,
                      delivered: Stat = Stat.NTF_DELIVERED, failed: Stat = Stat.NTF_FAILED) -> bool:
        """Send one message-kind push (message, deferred, periodic) and apply the outcome; True if delivered."""
        outcome = await self._sender.push(tok.provider, tok.device_token, body, background=background)
        if isinstance(outcome, Delivered):
            if tok.provider is not PushProvider.APNS_NULL:
                self._stats.incr(delivered)
            return True
        await self._not_delivered(tok, outcome, "message push", failed, Stat.NTF_INVALID_TKN,
                                  self.message_failures)
        return False

    async def _not_delivered(self, tok: TokenRecord, outcome: Invalid | Failed, what: str, failed: Stat,
                             invalid: Stat, summary: CountedLog) -> None:
        """APNs said no: a dead device token becomes INVALID with its reason (§5.8); all is counted."""
        self._stats.incr(failed)
        match outcome:
            case Invalid(reason):
                await self._store.set_token_status(tok.token_id, TokenStatus(TokenStatusKind.INVALID, reason))
                self._stats.incr(invalid)
                log.debug("%s: device token invalid (%s), %r", what, reason.value, tok)
                summary.event(f"invalid token {reason.value}")
            case Failed(reason):
                log.debug("%s failed: %s, %r", what, reason, tok)
                summary.event(reason)

    async def drain(self) -> None:
        """Wait until every queued push was handled (tests, graceful shutdown)."""
        await self._queue.join()
        await self._messages.join()

    async def _verify(self, tok: TokenRecord) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = payload.verification_body(tok.dh_secret, nonce, tok.reg_code)
        outcome = await self._sender.push(tok.provider, tok.device_token, body, background=True)
        if isinstance(outcome, Delivered):
            await self._store.confirm_token(tok.token_id)
            if tok.provider is not PushProvider.APNS_NULL:
                self._stats.incr(Stat.NTF_VRF_DELIVERED)
            return
        await self._not_delivered(tok, outcome, "verification push", Stat.NTF_VRF_FAILED, Stat.NTF_VRF_INVALID_TKN,
                                  self.failures)
