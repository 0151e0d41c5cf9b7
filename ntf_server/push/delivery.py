"""Sending a built push and acting on what APNs answered, retries included (spec §5.8, DESIGN "Push policy").

Theory of operation. A push worker (push/service.py) hands ``Delivery.send`` a ``Push``: its kind, the
token record and the body, built once (the body is resent unchanged on a retry: same nonce, same bytes).
``send`` makes the first try on the worker's own task and applies the outcome:

* ``Delivered`` → counted; a verification push also moves the token to CONFIRMED;
* ``Invalid`` → the token becomes INVALID with Apple's reason, counted;
* ``Failed`` (provider auth refused, a request APNs calls wrong, an environment not enabled) → counted
  failed at once, one summary log line a minute per kind (logsummary.py);
* ``RetryLater`` (429, 500, 503, timeouts, a lost connection) → a waiting entry in the ``RetryBook``
  (push/retry.py, pure), due after a capped, jittered exponential backoff; the worker returns at once.

``run`` is one scheduler task, which sleeps until the earliest entry is due and queues it, and
``RETRY_SENDERS`` tasks that send the due entries again and apply their outcomes the same way, until a
retry would fall after the deadline (``retry_deadline_s`` from the push's first try): then counted failed.
Before a retry the token is read again (spec §5.7 checks ACTIVE at dequeue): a token deleted, given a new
device token (TRPL) or, for a message push, no longer ACTIVE while its push waited is not pushed to.
So a waiting retry holds memory, never a worker: other tokens' pushes flow while an unwell APNs recovers.

A token has at most one waiting push per kind: a newer one made while one waits takes its slot (keeps its
due time, since the reason to wait still holds) and the older is dropped, counted ``*_retry_replaced``: a
message push carries the token's newest ≤ 6 notifications, so the newer carries the older's; a repeated
verification push carries the same code. Waiting retries are in memory: a restart forgets them, and the
notifications they carried stay in the store, so the token's next push carries them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, assert_never

from ntf_server.logevents import emit, log_event
from ntf_server.logsummary import CountedLog
from ntf_server.push.outcomes import Delivered, Failed, Invalid, PushSender, RetryLater
from ntf_server.push.retry import MAX_WAITING, Backoff, JitteredBackoff, RetryBook, Verdict, Waiting
from ntf_server.sensitive import TokenId
from ntf_server.stats import Stat, Stats
from ntf_server.store.base import PushTokenStore
from ntf_server.store.errors import StoreError
from ntf_server.store.records import PushProvider, TokenRecord, TokenStatus, TokenStatusKind

if TYPE_CHECKING:
    from ntf_server.config import PushConfig

log = logging.getLogger(__name__)

# Retries in flight at once. A retry waits for APNs' answer (ms); after an outage every waiting entry can
# fall due together, and 32 streams keep up with the 64 message workers without starving them of streams.
RETRY_SENDERS: Final = 32


@dataclass(frozen=True, slots=True)
class PushKind:
    """A kind of push and its counters; ``confirms``: a delivered push confirms the token (§4.5);
    ``wanted``: the token statuses in which a waiting retry is still sent (None: any)."""

    name: str
    delivered: Stat
    failed: Stat
    invalid: Stat
    retried: Stat
    replaced: Stat
    expired: Stat
    confirms: bool = False
    wanted: frozenset[TokenStatusKind] | None = None

    def __repr__(self) -> str:
        return f"<PushKind {self.name}>"


VERIFICATION: Final = PushKind("verification push", Stat.NTF_VRF_DELIVERED, Stat.NTF_VRF_FAILED,
                               Stat.NTF_VRF_INVALID_TKN, Stat.NTF_VRF_RETRIED, Stat.NTF_VRF_RETRY_REPLACED,
                               Stat.NTF_VRF_RETRY_EXPIRED, confirms=True)
MESSAGE: Final = PushKind("message push", Stat.NTF_DELIVERED, Stat.NTF_FAILED, Stat.NTF_INVALID_TKN,
                          Stat.NTF_RETRIED, Stat.NTF_RETRY_REPLACED, Stat.NTF_RETRY_EXPIRED,
                          wanted=frozenset({TokenStatusKind.ACTIVE}))  # §5.7: status checked again at dequeue
# Periodic (TCRN) pushes: their own delivered/failed counters (spec §6.4); retries counted with message pushes.
PERIODIC: Final = PushKind("periodic push", Stat.NTF_CRON_DELIVERED, Stat.NTF_CRON_FAILED, Stat.NTF_INVALID_TKN,
                           Stat.NTF_RETRIED, Stat.NTF_RETRY_REPLACED, Stat.NTF_RETRY_EXPIRED,
                           wanted=frozenset({TokenStatusKind.ACTIVE}))


@dataclass(frozen=True, slots=True)
class Push:
    kind: PushKind
    token: TokenRecord
    body: bytes = field(repr=False)
    background: bool
    # the SMP server of the notification that caused a message push: delivered/failed are also counted per
    # own server (spec §6.4 ntfDeliveredOwn/ntfFailedOwn; stats.incr_server); () for other kinds
    hosts: tuple[str, ...] = field(default=(), repr=False)


DEFAULT_BACKOFF: Final[Backoff] = JitteredBackoff(1.0, 120.0)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    backoff: Backoff = DEFAULT_BACKOFF
    deadline_s: float = 600.0
    verifications_per_hour: int = 10
    max_waiting: int = MAX_WAITING

    @classmethod
    def of(cls, push: PushConfig) -> DeliverySettings:
        return cls(JitteredBackoff(push.retry_backoff_base_s, push.retry_backoff_cap_s), push.retry_deadline_s,
                   push.verifications_per_hour)


_Key = tuple[str, bytes]  # (kind name, token id)


class Delivery:
    def __init__(self, store: PushTokenStore, sender: PushSender, stats: Stats, settings: DeliverySettings, *,
                 senders: int = RETRY_SENDERS, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._sender = sender
        self._stats = stats
        self._book: RetryBook[_Key, Push] = RetryBook(settings.backoff, settings.deadline_s, settings.max_waiting)
        self._senders = senders
        self._clock = clock
        self._seq = itertools.count()
        self._due: asyncio.Queue[Waiting[Push]] = asyncio.Queue()  # bounded by the book's max_waiting
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0  # due entries taken from the book, not yet answered
        # one line per token would let a client flood the log (issue 8): per-token detail at debug only
        self.summaries = {k: CountedLog(log, f"{k.name} failed", event="push.failed",
                                         fields={"kind": k.name.lower()}) for k in (VERIFICATION, MESSAGE, PERIODIC)}

    def __repr__(self) -> str:
        return f"<Delivery {self._book!r}, {self._busy} retrying>"

    @property
    def waiting(self) -> int:
        return len(self._book)

    async def send(self, push: Push) -> None:
        """Send now, or take the slot of this token's waiting push of the same kind; apply the outcome."""
        seq, now = next(self._seq), self._clock()
        key = (push.kind.name, push.token.token_id)
        if self._book.take_slot(key, push, seq, now):
            self._stats.incr(push.kind.replaced)
            return
        await self._attempt(key, push, seq, 1, now)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._schedule())
                for _ in range(self._senders):
                    tg.create_task(self._resend())
        finally:
            if self._book or self._busy:  # their notifications stay in the store: the next push carries them
                log_event(log, "push.stopped", waiting=len(self._book), in_flight=self._busy)

    async def idle(self) -> None:
        """Wait until no retry waits or is in flight (tests, graceful shutdown)."""
        await self._idle.wait()

    async def _attempt(self, key: _Key, push: Push, seq: int, attempts: int, first_at: float) -> None:
        tok = push.token
        outcome = await self._sender.push(tok.provider, tok.device_token, push.body, background=push.background)
        match outcome:
            case Delivered():
                if push.kind.confirms:
                    await self._store.confirm_token(tok.token_id)
                if tok.provider is not PushProvider.APNS_NULL:
                    self._count(push, push.kind.delivered)
            case RetryLater(reason, after_s):
                self._retry(key, push, seq, attempts, first_at, reason, after_s)
            case Invalid(reason):
                self._count(push, push.kind.failed)
                self._stats.incr(push.kind.invalid)
                await self._store.set_token_status(tok.token_id, TokenStatus(TokenStatusKind.INVALID, reason))
                log_event(log, "push.token_invalid", kind=push.kind.name.lower(), reason=reason.value,
                          token=TokenId(tok.token_id))
                self.summaries[push.kind].event(f"invalid token {reason.value}")
            case Failed(reason):
                self._failed(push, reason)
            case _:
                assert_never(outcome)

    def _count(self, push: Push, stat: Stat) -> None:
        if push.hosts:
            self._stats.incr_server(stat, push.hosts)
        else:
            self._stats.incr(stat)

    def _retry(self, key: _Key, push: Push, seq: int, attempts: int, first_at: float, reason: str,
               after_s: float) -> None:
        k = push.kind
        verdict = self._book.failed(key, push, seq, attempts, first_at, self._clock(), after_s)
        match verdict:
            case Verdict.SCHEDULED | Verdict.REPLACED:
                self._stats.incr(k.retried)
                if verdict is Verdict.REPLACED:
                    self._stats.incr(k.replaced)
                log_event(log, "push.retry", kind=k.name.lower(), attempt=attempts, reason=reason,
                          token=TokenId(push.token.token_id))
                self._idle.clear()
                self._wake.set()
            case Verdict.SUPERSEDED:
                self._stats.incr(k.replaced)
            case Verdict.EXPIRED:
                self._stats.incr(k.expired)
                self._failed(push, f"retry deadline passed ({reason})")
            case Verdict.FULL:
                self._failed(push, f"too many waiting retries ({reason})")
            case _:
                assert_never(verdict)

    def _failed(self, push: Push, reason: str) -> None:
        self._count(push, push.kind.failed)
        log_event(log, "push.gave_up", kind=push.kind.name.lower(), reason=reason, token=TokenId(push.token.token_id))
        self.summaries[push.kind].event(reason)

    async def _schedule(self) -> None:
        while True:
            for _, w in self._book.pop_due(self._clock()):
                self._busy += 1
                self._due.put_nowait(w)
            self._settle()
            nxt = self._book.next_due()
            self._wake.clear()
            try:
                async with asyncio.timeout(None if nxt is None else max(0.0, nxt - self._clock())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _resend(self) -> None:
        while True:
            w = await self._due.get()
            push = w.job
            try:
                if await self._still_wanted(push):
                    await self._attempt((push.kind.name, push.token.token_id), push, w.seq, w.attempts + 1,
                                        w.first_at)
            except StoreError as e:
                log_event(log, "push.store_error", error=type(e).__name__)
            except Exception as e:  # a bug in one push must not stop the task (and with it all retries)
                emit(log, "push.unexpected_error", {"error": type(e).__name__}, exc_info=True)
                self._count(push, push.kind.failed)
            finally:
                self._busy -= 1
                self._settle()

    async def _still_wanted(self, push: Push) -> bool:
        """A retry waits up to the deadline: meanwhile the app may have deleted its token, replaced its
        device token (TRPL) or the token may have left ACTIVE; then the push is dropped, not sent."""
        if push.token.provider is PushProvider.APNS_NULL:
            return True
        now = await self._store.get_token(push.token.token_id)
        wanted = push.kind.wanted
        if now is None or now.device_token != push.token.device_token or (
                wanted is not None and now.status.kind not in wanted):
            log_event(log, "push.retry_dropped", kind=push.kind.name.lower(), token=TokenId(push.token.token_id))
            return False
        return True

    def _settle(self) -> None:
        if self._busy == 0 and len(self._book) == 0:
            self._idle.set()
        else:
            self._idle.clear()
