"""The push policy in effect, applied to one message notification (DESIGN "Push policy").

``HiddenPushes.plan`` turns a token's newest <= 6 notifications into what to send. The policy in effect is
the one stored in Redis (admin API), else the config's ``[push]``; the decision and the budget update are
one Redis script (store/budget.py), which also checks that the policy document the budget was taken from
is still the stored one (else it answers the stored one and we decide again): one round trip per push,
and a change made on any instance is used by the next push on every instance. Parity mode
(``hidden_per_hour = 0``) has no budget to consult: one GET checks the policy is still parity.
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
from ntf_server.store.budget import BudgetStore, Decided, PolicyChanged
from ntf_server.store.errors import StoreError
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import LastNotification, PushProvider, TokenRecord

NONCE_BYTES: Final = 24
# Decisions in flight at once (each is one or two short Redis calls). The push workers (64) share the store's
# connection pool (64) with the subscriber pool: without this gate a burst made redis-py run out of
# connections ("Too many connections" → StoreUnavailable, tests/bench/nmsg_pipeline.py --policy).
DECISIONS_IN_FLIGHT: Final = 16
POLICY_RETRIES: Final = 3
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
        self._raw: bytes | None = None  # the stored policy document last seen (checked by every decision)

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
        env = ENVIRONMENT.get(tok.provider, "production")
        for _ in range(POLICY_RETRIES):
            budget = (self.policy.parsed(self._raw) or self.fallback).for_environment(env)
            if budget.parity:  # no budget to consult: one GET says whether parity is still the policy
                raw = await self.policy.raw()
                if raw != self._raw:
                    self._raw = raw
                    continue
                return Plan(Decision.ALERT, alert_body(tok, items))
            # under defer the script may keep the body as the pending push, so it is built first; otherwise
            # only the body the decision needs is built (encryption is most of a push's CPU)
            deferring = budget.overflow is Overflow.DEFER
            hidden = hidden_body(tok, items) if deferring else b""
            res = await self.budgets.message(
                tok.token_id, budget, self.clock(), hidden,
                coalesce_rank([n.received_at_ms for n in notifications]) if deferring else "",
                policy=(self.policy.key, self._raw))
            if isinstance(res, PolicyChanged):  # the script checked the policy our budget came from
                self._raw = res.raw
                continue
            return _plan_of(res, hidden, tok, items)
        raise StoreError("the push policy changed on every try")  # one admin PUT per push: not a real case


def _plan_of(res: Decided, hidden: bytes, tok: TokenRecord, items: Sequence[payload.PNMessage]) -> Plan | None:
    decision, due = res
    match decision:
        case None:
            return None
        case Decision.HIDDEN:
            return Plan(decision, hidden or hidden_body(tok, items))
        case Decision.ALERT:
            return Plan(decision, alert_body(tok, items))
    return Plan(decision, due=due)

def hidden_body(tok: TokenRecord, items: Sequence[payload.PNMessage]) -> bytes:
    """The hidden push: wakes the app to check messages; the encrypted newest <= 6 ride along."""
    return payload.message_background_body(tok.dh_secret, secrets.token_bytes(NONCE_BYTES), items)


def alert_body(tok: TokenRecord, items: Sequence[payload.PNMessage]) -> bytes:
    """The production alert (spec §5.5 item 2) with the token's newest <= 6 notifications."""
    return payload.message_alert_body(tok.dh_secret, secrets.token_bytes(NONCE_BYTES), items)
