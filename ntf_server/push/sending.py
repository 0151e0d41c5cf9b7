"""One try of one push and what its answer means (push/pipeline.py's senders and the schedulers' ``submit``).

APNs' answer (push/outcomes.py) is applied here: delivered → counted, a verification confirms the token;
a dead token → INVALID; a failure → counted and logged (summarised); "retry later" → the push's outbox
entry is due again after a capped, jittered backoff (``PipelineSettings.backoff``), until ``deadline_s``
from its first try, then it is counted expired. Every answer but "retry later" ends the push: its outbox
entry is acknowledged (push/outbox_keeper.py). Store calls made per push on these paths pass a gate of
``store_gate``, so a burst of answers cannot take the whole Redis pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, assert_never

from ntf_server.observability.logevents import emit, log_event
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.metricdef import Counter
from ntf_server.observability.sensitive import TokenId
from ntf_server.observability.stats import Stats
from ntf_server.push.model import BACKGROUND, MESSAGE, PERIODIC, VERIFICATION, PipelineSettings, Push, PushKind
from ntf_server.push.outbox_keeper import OutboxKeeper
from ntf_server.push.outcomes import Delivered, Failed, Invalid, PushSender, RetryLater
from ntf_server.store.base import OutboxStore, TokenStatusStore
from ntf_server.store.errors import StoreError
from ntf_server.store.records import PushProvider, TokenStatus, TokenStatusKind

log = logging.getLogger(__name__)


class SendingStore(OutboxStore, TokenStatusStore, Protocol):
    """What applying an answer needs of the store (store/base.py)."""


class Sending:
    def __init__(self, store: SendingStore, sender: PushSender, stats: Stats, keeper: OutboxKeeper,
                 settings: PipelineSettings, clock: Callable[[], float], store_errors: CountedLog) -> None:
        self._store = store
        self._sender = sender
        self._stats = stats
        self._keeper = keeper
        self._settings = settings
        self._clock = clock
        self._store_errors = store_errors
        self._gate = asyncio.Semaphore(settings.store_gate)
        self.summaries: dict[PushKind, CountedLog] = {
            k: CountedLog(log, f"{k.name} failed", event="push.failed", fields={"kind": k.name.lower()})
            for k in (VERIFICATION, MESSAGE, PERIODIC)}

    async def attempt(self, push: Push) -> None:
        try:
            await self._try(push)
        except StoreError as e:  # its outbox entry stays, due when its lease ends: a claim sends it again
            self._store_errors.event(type(e).__name__)
            self._keeper.in_flight.discard(push.outbox_id)
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

    def _count(self, push: Push, stat: Counter) -> None:
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
        if push.outbox_id:
            self._keeper.done(push.outbox_id)

    async def _retry_later(self, push: Push, reason: str, after_s: float) -> None:
        kind, now, tries = push.kind, self._clock(), push.tries + 1
        due = now + max(0.0, self._settings.backoff.delay_s(tries, after_s))
        if due > push.first_at + self._settings.deadline_s:
            self._stats.incr(kind.expired)
            self._failed(push, f"retry deadline passed ({reason})")
            return
        async with self._gate:
            if push.outbox_id:
                oid = push.outbox_id
                await self._keeper.write_retry(oid, lambda: self._store.outbox.retry(oid, due, tries))
            else:
                await self._store.outbox.add(push.code, push.token.token_id, push.first_at, due, tries)
        self._stats.incr(kind.retried)
        log_event(log, "push.retry", kind=kind.name.lower(), attempt=tries, reason=reason,
                  token=TokenId(push.token.token_id))
        self._keeper.retry_due(due)
