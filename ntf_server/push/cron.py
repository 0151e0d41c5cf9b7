"""Periodic "check messages" pushes (§5.10) for ACTIVE tokens with TCRN set.

Theory of operation: every ``scan_s`` the store lists the ACTIVE tokens whose periodic push is due (the
first one is due one interval after TCRN: the Haskell server never sends it, §5.10/§8; we do). For each,
one budget script (store/budget.py ``cron``, mirroring policy.cron_decide) decides:
  - a hidden push was decided for the device within the interval → skipped, counted ``ntf_cron_skipped``
    (the device was woken anyway; periodic pushes exist for devices nothing else wakes);
  - else it counts against the device token's hidden budget and is sent (``ntf_cron_delivered``/``_failed``);
  - the budget is empty → skipped, counted ``ntf_cron_skipped_budget``: an empty budget means a hidden push
    was decided within the last ``3600 / hidden_per_hour`` s, so the device was woken recently;
  - parity mode (``hidden_per_hour = 0``) keeps no budget: sent, as the Haskell server does.
Either way the token's next periodic push is scheduled one interval later (``mark_cron_sent``), also when
the push failed: a dead device token became INVALID, any other failure waits for the next interval.
Several instances (or workers) on one data set: the decision is also a *claim* (store/budget.py ``cron``):
a SEND leaves a claim that expires after ``lease_s`` and a record of the decision, until ``cron_done``
after the push was handed to APNs (or to the outbox, for a retry) and the next one scheduled. Another
instance that scanned the same token meanwhile gets nothing while the claim lives, nor after it, as the
token's last periodic push (``cs``) is then newer than its scan: each periodic push is sent once while both
live, also in parity mode, where no budget records it. A sender killed (kill -9) between its decision and
``cron_done`` leaves the decision recorded and the token due: after the lease, the next scan of any
instance sends it again without spending the budget twice. Never lost; sent twice only when the dead one's
push had reached APNs (the in-flight push, at least once).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Final

from ntf_server.observability.logevents import emit
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.stats import Stats
from ntf_server.push import payload
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.model import PERIODIC_PUSHES, Push
from ntf_server.push.policy import CronDecision
from ntf_server.store.base import CronStore
from ntf_server.store.errors import StoreError
from ntf_server.store.outbox import PushKindCode
from ntf_server.store.records import TokenRecord

log = logging.getLogger(__name__)

# counted here (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
NTF_CRON_SKIPPED: Final = Counter("ntf_cron_skipped", "Periodic pushes skipped: a hidden push reached the device "
                                  "within the interval", PERIODIC_PUSHES, "skipped")
NTF_CRON_SKIPPED_BUDGET: Final = Counter("ntf_cron_skipped_budget", "Periodic pushes skipped: the device's "
                                         "hidden-push budget was empty", PERIODIC_PUSHES, "skipped_budget")

BATCH: Final = 1000
CLAIM_LEASE_S: Final = 30.0  # a claimed periodic push not confirmed within this is sent again (its sender died)
Submit = Callable[[Push], Awaitable[None]]


class CronPushes:
    def __init__(self, hidden: HiddenPushes, store: CronStore, submit: Submit, stats: Stats, *,
                 scan_s: float = 60.0, lease_s: float = CLAIM_LEASE_S) -> None:
        self._hidden = hidden
        self._store = store
        self._submit = submit
        # one line at once, then one a minute while Redis stays away (a scan every {scan_s} would flood)
        self.store_errors = CountedLog(log, "periodic pushes: store error", level=logging.WARNING,
                                       event="scheduler.store_error", fields={"part": "periodic pushes"})
        self._stats = stats
        self._scan_s = scan_s
        self._lease_s = lease_s
        self._claimer = os.urandom(8).hex()  # names this sender's claims (store/budget.py CRON)

    def __repr__(self) -> str:
        return f"<CronPushes scan={self._scan_s}s>"

    async def run(self) -> None:
        while True:
            try:
                while await self.run_once() >= BATCH:
                    pass
            except StoreError as e:
                self.store_errors.event(type(e).__name__)
            await asyncio.sleep(self._scan_s)

    async def run_once(self) -> int:
        """Every periodic push due now; returns how many tokens were due."""
        now = self._hidden.clock()
        due = await self._store.tokens_due_for_cron(now, BATCH)
        for tok in due:
            try:
                await self._one(tok, now)
            except StoreError:
                raise
            except Exception as e:  # a bug in one push must not stop the others (nor the server)
                emit(log, "scheduler.unexpected_error", {"part": "periodic push", "error": type(e).__name__},
                     exc_info=True)
        return len(due)

    async def _one(self, tok: TokenRecord, now: float) -> None:
        budget = await self._hidden.budget_for(tok.provider)
        budgets = self._hidden.budgets
        decision = await budgets.cron(tok.token_id, budget, now, 60.0 * tok.cron_interval_min,
                                      lease_s=self._lease_s, claimer=self._claimer)
        match decision:
            case CronDecision.SEND:
                # the hidden push's shape and size (push/payload.py); counted ntf_cron_delivered/_failed by Delivery
                body = payload.check_messages_body(tok.dh_secret, payload.new_nonce())
                await self._submit(Push(PushKindCode.PERIODIC, tok, body, now))
                await self._store.mark_cron_sent(tok.token_id, now)
                await budgets.cron_done(tok.token_id, self._claimer)
                return
            case CronDecision.SKIP_RECENT:
                self._stats.incr(NTF_CRON_SKIPPED)
            case CronDecision.SKIP_BUDGET:
                self._stats.incr(NTF_CRON_SKIPPED_BUDGET)
            case None:
                return  # deleted meanwhile, or another instance sends (or sent) it
        await self._store.mark_cron_sent(tok.token_id, now)
