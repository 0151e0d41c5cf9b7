"""Push delivery: a bounded queue, workers, APNs outcomes turned into token status and counters (§5.8–5.9).

Theory of operation: handlers enqueue without waiting (``send_verification`` never blocks the NTF
connection; a full queue is counted and the push dropped, and the client's repeat TNEW re-sends it).
Workers build the body (push/payload.py, pure), hand it to a ``PushSender`` and apply the outcome:
delivered → CONFIRMED (verification), "token invalid" → ``INVALID,<reason>``, anything else → counted
failure. The message-notification path and the hidden-push budget arrive with the policy issue.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Final, Protocol

from ntf_server.logsummary import CountedLog
from ntf_server.push import payload
from ntf_server.stats import Stats
from ntf_server.store.base import Store
from ntf_server.store.errors import StoreError
from ntf_server.store.records import InvalidReason, PushProvider, TokenRecord, TokenStatus, TokenStatusKind

log = logging.getLogger(__name__)

QUEUE_SIZE: Final = 32768  # pushQSize
NONCE_BYTES: Final = 24


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


class PushSender(Protocol):
    async def push(self, provider: PushProvider, device_token: bytes, body: bytes, *, background: bool) -> Outcome:
        ...


class PushService:
    def __init__(self, store: Store, sender: PushSender, stats: Stats, *, workers: int = 4,
                 queue_size: int = QUEUE_SIZE) -> None:
        self._store = store
        self._sender = sender
        self._stats = stats
        self._workers = workers
        self._queue: asyncio.Queue[TokenRecord] = asyncio.Queue(queue_size)
        # one line per token would let a client flood the log (issue 8): per-token detail at debug only
        self.failures = CountedLog(log, "verification push failed")
        self.drops = CountedLog(log, "push queue full: verification push dropped", level=logging.WARNING)

    def send_verification(self, token: TokenRecord) -> None:
        try:
            self._queue.put_nowait(token)
        except asyncio.QueueFull:
            self._stats.incr("push_queue_full")
            self.drops.event("queue full")
            return
        if token.provider is not PushProvider.APNS_NULL:
            self._stats.incr("ntf_vrf_queued")

    @property
    def queue_length(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._workers):
                tg.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            token = await self._queue.get()
            try:
                await self._verify(token)
            except StoreError as e:
                log.warning("store error after a push: %s", type(e).__name__)
            except Exception:  # a bug in one push must not stop the worker (and with it all pushes)
                log.exception("verification push failed unexpectedly")
                self._stats.incr("ntf_vrf_failed")
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued push was handled (tests, graceful shutdown)."""
        await self._queue.join()

    async def _verify(self, tok: TokenRecord) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = payload.verification_body(tok.dh_secret, nonce, tok.reg_code)
        outcome = await self._sender.push(tok.provider, tok.device_token, body, background=True)
        counted = tok.provider is not PushProvider.APNS_NULL
        match outcome:
            case Delivered():
                await self._store.confirm_token(tok.token_id)
                if counted:
                    self._stats.incr("ntf_vrf_delivered")
            case Invalid(reason):
                await self._store.set_token_status(tok.token_id, TokenStatus(TokenStatusKind.INVALID, reason))
                self._stats.incr("ntf_vrf_failed")
                self._stats.incr("ntf_vrf_invalid_tkn")
                log.debug("verification push: device token invalid (%s), %r", reason.value, tok)
                self.failures.event(f"invalid token {reason.value}")
            case Failed(reason):
                log.debug("verification push failed: %s, %r", reason, tok)
                self._stats.incr("ntf_vrf_failed")
                self.failures.event(reason)
