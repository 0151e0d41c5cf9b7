"""This process's side of the push outbox (store/outbox.py): which entries it is sending, their
acknowledgements, and the retry scheduler that claims the entries that fell due (push/pipeline.py).

* **In flight.** Every message push decided by the pipeline, and every entry this process claimed, is *in
  flight* from then until APNs answered it for good (or a "retry later" put it back in the outbox with a
  new due time). A graceful stop releases what is still in flight (due at once, for the next start).
* **Acknowledgements** wait up to ``ACK_PACE_S`` to share a call: they are not on anyone's path, and an
  entry acknowledged late is at worst sent again after its lease, by a claim.
* **Retries from Redis.** Every ``retry_scan_s`` (sooner when a retry falls due earlier) the keeper claims
  the entries that fell due (retries, and pushes of an instance that died while sending them: their lease
  ran out), builds each push again from its kind, its token as it is now (a token deleted or no longer
  ACTIVE gets nothing) and its cause, and hands it to the senders. Claims are atomic and leased, so across
  instances and workers each entry is sent by one claimer at a time. The same loop extends the claims of the
  pushes this process still holds, every third of a lease, so another instance never claims a push this one
  is still sending (queued, or at a slow APNs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from ntf_server.observability.logevents import log_event
from ntf_server.observability.logsummary import CountedLog
from ntf_server.observability.sensitive import TokenId
from ntf_server.push import payload
from ntf_server.push.model import KIND_OF, PipelineSettings, Push
from ntf_server.store.base import NoticeStore, OutboxStore, TokenLookup
from ntf_server.store.errors import StoreError
from ntf_server.store.outbox import OutboxEntry, PushKindCode
from ntf_server.store.records import MAX_NOTICES, TokenStatusKind

log = logging.getLogger(__name__)

ACK_PACE_S: Final = 0.01
STORE_RETRY_S: Final = 3.0


class KeeperStore(NoticeStore, OutboxStore, TokenLookup, Protocol):
    """What the keeper needs of the store (store/base.py)."""


class OutboxKeeper:
    def __init__(self, store: KeeperStore, settings: PipelineSettings, clock: Callable[[], float],
                 store_errors: CountedLog) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._store_errors = store_errors
        self.in_flight: set[int] = set()  # outbox ids queued or being sent by this process
        self.closing = False  # a draining process claims nothing more: what it releases is for the next start
        self.waiting = 0  # entries waiting for a retry (a gauge, refreshed by the retry scheduler)
        self._acks: list[int] = []
        self._ack_wake = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._next_claim = 0.0
        self._next_extend = 0.0  # when the claims of the pushes held here are extended next
        self._extending: frozenset[int] = frozenset()  # the ids whose claims are being extended now
        self._extensions = 0  # extensions started so far
        self._extended = asyncio.Event()  # set while no extension is in progress
        self._extended.set()

    def done(self, outbox_id: int) -> None:
        """Answered for good: the entry goes (batched)."""
        self.in_flight.discard(outbox_id)
        self._acks.append(outbox_id)
        self._ack_wake.set()

    def retry_due(self, due: float) -> None:
        """A retry was written due at ``due``: wake the scheduler if it would otherwise claim later."""
        if due < self._next_claim:
            self._retry_wake.set()

    async def run_acks(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            if len(self._acks) < self._settings.retry_batch:
                await asyncio.sleep(ACK_PACE_S)
            await self.flush_acks()

    async def flush_acks(self) -> None:
        ids, self._acks = self._acks, []
        if not ids:
            return
        try:
            await self._store.outbox.ack(ids)
        except StoreError as e:  # kept for the next flush; until then a claim may send them again
            self._store_errors.event(type(e).__name__)
            self._acks = ids + self._acks
            await asyncio.sleep(STORE_RETRY_S)
            self._ack_wake.set()

    async def run_retries(self, queue: Callable[[Push], Awaitable[None]]) -> None:
        """Claim due entries and ``queue`` their pushes, for ever."""
        s = self._settings
        while True:
            delay = s.retry_scan_s
            try:
                entries = [] if self.closing else await self._store.outbox.claim(self._clock(), s.lease_s,
                                                                                 s.retry_batch)
                for e in entries:
                    await self._resend(e, queue)
                delay = min(delay, await self._extend_claims())
                self.waiting = max(0, await self._store.outbox.count() - len(self.in_flight))
                if len(entries) >= s.retry_batch:
                    delay = 0.0
            except StoreError as e:
                self._store_errors.event(type(e).__name__)
            self._next_claim = self._clock() + delay
            self._retry_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_wake.wait()

    async def _extend_claims(self) -> float:
        """Every third of a lease, the claims of the pushes this process still holds are extended by one
        lease (another instance would send them again after it); returns the time until the next time."""
        lease = self._settings.lease_s
        if self._clock() >= self._next_extend and self.in_flight and not self.closing:
            # a retry or release of one of these meanwhile waits for the extension and is applied again
            self._extending, self._extended = frozenset(self.in_flight), asyncio.Event()
            self._extensions += 1
            try:
                await self._store.outbox.extend(sorted(self._extending), self._clock() + lease)
            finally:
                self._extending = frozenset()
                self._extended.set()
            self._next_extend = self._clock() + lease / 3
        return max(self._next_extend - self._clock(), 0.0) if self.in_flight else lease / 3

    async def write_retry(self, outbox_id: int, write: Callable[[], Awaitable[object]]) -> None:
        """A "retry later" written to an entry this process holds, applied again after an extension of its
        claim that overlapped it (the extension would have moved its due time back to one lease on)."""
        started = self._extensions
        await write()
        if outbox_id in self._extending or self._extensions != started:
            await self._extended.wait()
            await write()
        self.in_flight.discard(outbox_id)

    def poke(self) -> None:
        """Claim now (tests waiting for the outbox to empty)."""
        self._retry_wake.set()

    async def release(self) -> int:
        """Graceful stop: what is still in flight is made due at once for the next start; acks flushed."""
        await self._extended.wait()  # no extension runs after the release (none starts once closing)
        left = sorted(self.in_flight)
        with contextlib.suppress(StoreError):
            if left:
                await self._store.outbox.release(left, self._clock())
            await self.flush_acks()
        return len(left)

    async def _resend(self, e: OutboxEntry, queue: Callable[[Push], Awaitable[None]]) -> None:
        push = await self._rebuild(e)
        if push is None:
            log_event(log, "push.retry_dropped", kind=KIND_OF[e.kind].name.lower(), token=TokenId(e.token_id))
            self.done(e.id)
            return
        self.in_flight.add(e.id)
        await queue(push)

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
