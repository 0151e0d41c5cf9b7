"""The deferred-push scheduler (overflow = defer): sends each token's pending push when its budget returns.

Theory of operation: the pending pushes and their due times live in Redis (store/budget.py), so a restart loses
none: the scheduler of any instance finds them in the due index. Each round it reads the due token ids, re-reads
each token (a token deleted, replaced or no longer ACTIVE meanwhile gets nothing: the pending push is forgotten and
counted stale) and *claims* the push in one script (store/notices.py), which consumes the budget, leases the entry
for ``CLAIM_LEASE_S`` and answers the token's newest <= 6 notifications, which the push carries; a second instance
claiming the same token finds it not due and leaves it. Once APNs answered (or the push went to the outbox for a
retry), ``done`` removes it, unless a newer notification joined it during the send (then it stays, due when the
budget returns again). A process that dies between claim and ``done`` leaves the entry to be claimed again after the
lease: a push may then be sent twice, never lost.

Several instances (or workers) on one data set, checked by tests/reliability/test_scheduled_kill9.py:
  - both alive: every scheduler reads the same due index, and the claim script lets one of them have each push
    (it is due again only one lease later): sent once, as long as its send ends within the lease. A send waits
    at most for APNs' answer (the client's 10 s timeout; a "retry later" goes to the outbox, whose claims
    the pipeline extends), so ``[push] claim_lease_s`` must stay well above that (default 30 s);
  - kill -9 mid-send: after the lease the push is due again and the next round of any instance claims it,
    spends the budget again and sends it, built from the token's newest notifications then: never lost;
    sent twice only when the dead one's push had reached APNs (at least once for the in-flight push). Killed
    after APNs answered "retry later" and before ``done``: the outbox's retry and the claim both send it.
  - not covered: a ``StoreError`` while the push goes to the outbox for a retry (Redis away at that moment)
    still ends in ``done``: that push is lost, counted in ``scheduler.store_error``.

The round sleeps until the earliest due time, at most ``scan_s``; a Redis error is logged and the round
retried (the store's own health probe reports the outage), never fatal to the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from ntf_server.observability.logevents import emit
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter, Family
from ntf_server.observability.stats import Stats
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.model import Push
from ntf_server.push.policy import Budget
from ntf_server.store.base import TokenLookup
from ntf_server.store.budget import CLAIM_LEASE_S
from ntf_server.store.errors import StoreError
from ntf_server.store.notices import Claimed
from ntf_server.store.outbox import PushKindCode
from ntf_server.store.records import TOKEN_ACTIVE

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
DEFERRED_PUSHES: Final = Family("deferred_pushes", "event", "Deferred pushes (overflow = defer): sent when the budget "
                                "returned, or dropped as stale (token gone or no longer active)")
NTF_DEFERRED_SENT: Final = Counter("ntf_deferred_sent", "Deferred pushes sent when the device's budget returned",
                                   DEFERRED_PUSHES, "sent")
NTF_DEFERRED_STALE: Final = Counter("ntf_deferred_stale", "Deferred pushes dropped: the token was deleted or is no "
                                    "longer active", DEFERRED_PUSHES, "stale")

BATCH: Final = 256  # due pushes read per round
CONCURRENCY: Final = 32  # pushes of one round in flight at once (APNs answers in ms; one slow answer not all)
MIN_SLEEP_S: Final = 0.01

Submit = Callable[[Push], Awaitable[None]]


class DeferredStore(TokenLookup, Protocol):
    async def claim_deferred(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Claimed | float | None: ...


class DeferredScheduler:
    def __init__(self, hidden: HiddenPushes, store: DeferredStore, submit: Submit, stats: Stats, *,
                 scan_s: float = 1.0, lease_s: float = CLAIM_LEASE_S) -> None:
        self._hidden = hidden
        self._store = store
        self._submit = submit
        # one line at once, then one a minute while Redis stays away (a scan every {scan_s} would flood)
        self.store_errors = CountedLog(log, "deferred pushes: store error", level=logging.WARNING,
                                       event="scheduler.store_error", fields={"part": "deferred pushes"})
        self._stats = stats
        self._scan_s = scan_s
        self._lease_s = lease_s
        self._gate = asyncio.Semaphore(CONCURRENCY)

    def __repr__(self) -> str:
        return f"<DeferredScheduler scan={self._scan_s}s>"

    async def run(self) -> None:
        while True:
            try:
                handled = await self.run_once()
                delay = 0.0 if handled >= BATCH else await self._until_next()
            except StoreError as e:
                self.store_errors.event(type(e).__name__)
                delay = self._scan_s
            await asyncio.sleep(max(delay, MIN_SLEEP_S))

    async def _until_next(self) -> float:
        nxt = await self._hidden.budgets.next_due()
        return self._scan_s if nxt is None else min(self._scan_s, nxt - self._hidden.clock())

    async def run_once(self) -> int:
        """One round: every push due now; returns how many due entries were looked at."""
        now = self._hidden.clock()
        tids = await self._hidden.budgets.due(now, BATCH)
        async with asyncio.TaskGroup() as tg:
            for tid in tids:
                tg.create_task(self._one(tid, now))
        return len(tids)

    async def _one(self, tid: bytes, now: float) -> None:
        async with self._gate:
            try:
                await self._claim_and_send(tid, now)
            except StoreError as e:  # one token's trouble must not cancel the round's others
                self.store_errors.event(type(e).__name__)
            except Exception as e:  # a bug in one push must not stop the scheduler (and with it the server)
                emit(log, "scheduler.unexpected_error", {"part": "deferred push", "error": type(e).__name__},
                     exc_info=True)

    async def _claim_and_send(self, tid: bytes, now: float) -> None:
        budgets = self._hidden.budgets
        tok = await self._store.get_token(tid)
        if tok is None or tok.status != TOKEN_ACTIVE:
            if await budgets.done(tid):
                self._stats.incr(NTF_DEFERRED_STALE)
            return
        got = await self._store.claim_deferred(tid, await self._hidden.budget_for(tok.provider), now, self._lease_s)
        if not isinstance(got, Claimed):
            return  # not due any more (another instance has it) or the budget went elsewhere: rescheduled
        self._stats.incr(NTF_DEFERRED_SENT)
        body = payload.message_body(got.token.dh_secret, got.notices, hidden=True)
        try:
            await self._submit(Push(PushKindCode.DEFERRED, got.token, body, now))
        finally:
            await budgets.done(tid, got.version)
