"""The push policy in effect, applied to one message notification (DESIGN "Push policy").

``HiddenPushes.plan`` turns a token's newest <= 6 notifications into what to send: the policy is read from
Redis for every push (``PolicyStore.current``: one GET, parsed only when it changed), falling back to the
config's ``[push]``, so a change made through the admin API on any instance is used by the next push on
every instance; the decision and the budget update are one Redis script (store/budget.py). Parity mode
(``hidden_per_hour = 0``) decides in Python without touching the budget.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ntf_server.config import Overflow
from ntf_server.push import payload
from ntf_server.push.policy import Budget, Decision, PolicySettings, coalesce_rank
from ntf_server.store.budget import BudgetStore
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import LastNotification, PushProvider, TokenRecord

NONCE_BYTES: Final = 24
# Decisions in flight at once (each is one or two short Redis calls). The push workers (64) share the store's
# connection pool (64) with the subscriber pool: without this gate a burst made redis-py run out of
# connections ("Too many connections" → StoreUnavailable, tests/bench/nmsg_pipeline.py --policy).
DECISIONS_IN_FLIGHT: Final = 16
ENVIRONMENT: Final = {
    PushProvider.APNS_PROD: "production",
    PushProvider.APNS_DEV: "development",
    PushProvider.APNS_TEST: "test",
}


@dataclass(frozen=True, slots=True)
class Plan:
    decision: Decision
    body: bytes = b""  # HIDDEN: background body; ALERT: alert body; DEFER/DROP: nothing to send now
    due: float | None = None  # DEFER: when the token's pending push is due

    @property
    def background(self) -> bool:
        return self.decision is Decision.HIDDEN


def pn_messages(notifications: Sequence[LastNotification]) -> list[payload.PNMessage]:
    return [payload.PNMessage(n.server, n.notifier_id, n.received_at, n.nonce, n.enc_meta) for n in notifications]


class HiddenPushes:
    def __init__(self, policy: PolicyStore, fallback: PolicySettings, budgets: BudgetStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.fallback = fallback
        self.budgets = budgets
        self.clock = clock  # tests and benchmarks inject a fake clock
        self._gate = asyncio.Semaphore(DECISIONS_IN_FLIGHT)

    def __repr__(self) -> str:
        return f"<HiddenPushes {self.budgets!r} {self.policy!r}>"

    async def settings(self) -> PolicySettings:
        return await self.policy.current() or self.fallback

    async def budget_for(self, provider: PushProvider) -> Budget:
        return (await self.settings()).for_environment(ENVIRONMENT.get(provider, "production"))

    async def plan(self, tok: TokenRecord, notifications: Sequence[LastNotification]) -> Plan | None:
        """What this notification becomes; None when the token was deleted meanwhile (nothing to send)."""
        async with self._gate:
            return await self._plan(tok, notifications)

    async def _plan(self, tok: TokenRecord, notifications: Sequence[LastNotification]) -> Plan | None:
        items = pn_messages(notifications)
        budget = await self.budget_for(tok.provider)
        if budget.parity:
            return Plan(Decision.ALERT, alert_body(tok, items))
        hidden = payload.message_background_body(tok.dh_secret, secrets.token_bytes(NONCE_BYTES), items)
        deferring = budget.overflow is Overflow.DEFER
        decision, due = await self.budgets.message(
            tok.token_id, budget, self.clock(), hidden if deferring else b"",
            coalesce_rank([n.received_at_ms for n in notifications]) if deferring else "")
        match decision:
            case None:
                return None
            case Decision.HIDDEN:
                return Plan(decision, hidden)
            case Decision.ALERT:
                return Plan(decision, alert_body(tok, items))
        return Plan(decision, due=due)


def alert_body(tok: TokenRecord, items: Sequence[payload.PNMessage]) -> bytes:
    """The production alert (spec §5.5 item 2) with the token's newest <= 6 notifications."""
    return payload.message_alert_body(tok.dh_secret, secrets.token_bytes(NONCE_BYTES), items)
