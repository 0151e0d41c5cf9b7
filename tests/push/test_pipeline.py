"""The push pipeline as a component (push/pipeline.py): a real Redis store, and a sender at the pipeline's seam
to APNs that records what it is given and answers what the test says (nothing sleeps: the tests wait on it).

What is proved here: every notice is carried by a push (bursts included); a flood from one SMP server does
not hold back another's notices; and nothing accepted is lost across a graceful stop or an abandoned process
(pushes queued, in flight or waiting for a retry are all delivered by the next pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import pytest
from helpers.store_helpers import NOW, notifier_key, server, token

from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer, b64u_decode
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.model import PipelineSettings
from ntf_server.push.outcomes import Delivered, Outcome, RetryLater
from ntf_server.push.pipeline import PushPipeline
from ntf_server.push.policy import PolicySettings
from ntf_server.push.retry import NO_WAIT
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import Notice, PushProvider, TokenRecord
from ntf_server.store.redis import RedisStore

PARITY = PolicySettings.from_json({"hidden_per_hour": 0})


@dataclass
class Sent:
    device: bytes
    body: bytes


@dataclass
class Apns:
    """The pipeline's ``PushSender``: records each push it delivers; ``answer`` decides (may wait)."""

    delivered: list[Sent] = field(default_factory=list)
    tries: int = 0
    gate: asyncio.Event | None = None  # set: answer; unset: hold every push until it is set
    retry: bool = False
    stall_after: int | None = None  # tries beyond this many are never answered (APNs stalls)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def push(self, provider: PushProvider, device_token: bytes, body: bytes, *, background: bool) -> Outcome:
        self.tries += 1
        self.arrived.set()
        if self.stall_after is not None and self.tries > self.stall_after:
            await asyncio.Event().wait()  # never set: only a cancel ends it
        if self.gate is not None:
            await self.gate.wait()
        if self.retry:
            return RetryLater("ServiceUnavailable", 0.0)
        self.delivered.append(Sent(device_token, body))
        return Delivered()


@dataclass(frozen=True)
class Fixed:
    """A backoff of ``s`` seconds whatever the try."""

    s: float

    def delay_s(self, attempt: int, hint_s: float) -> float:
        return self.s


def carried(tok: TokenRecord, body: bytes) -> list[bytes]:
    """The nonces of the notices a push carries, oldest first (the app's view: decrypt the list)."""
    data = json.loads(body)["notificationData"]
    text = crypto.cb_decrypt(tok.dh_secret, b64u_decode(data["nonce"]), b64u_decode(data["message"]))
    return [b64u_decode(item.split(" ")[2]) for item in text.decode().split(";")]


async def active(store: RedisStore, queues: int, srv: SMPServer | None = None) -> tuple[TokenRecord, list[bytes]]:
    t = replace(token(), provider=PushProvider.APNS_TEST)
    await store.create_token(t)
    await store.activate_token(t.token_id)
    nids = [os.urandom(24) for _ in range(queues)]
    for nid in nids:
        await store.create_subscription(t.token_id, srv or server(1), nid, notifier_key())
    got = await store.get_token(t.token_id)
    assert got is not None
    return got, nids


def notices(srv: SMPServer, nids: list[bytes], n: int, start_ms: int = 1_700_000_000_000) -> list[Notice]:
    return [Notice(srv, nids[i % len(nids)], start_ms + i, os.urandom(24), b"meta %d" % i) for i in range(n)]


def pipeline(store: RedisStore, apns: Apns, **settings: object) -> PushPipeline:
    hidden = HiddenPushes(PolicyStore(store.dataset), PARITY, store.budgets(),
                          clock=lambda: NOW)
    s = replace(PipelineSettings(backoff=NO_WAIT, retry_scan_s=0.05), **settings)  # type: ignore[arg-type]
    return PushPipeline(store, apns, Stats(), hidden, settings=s)


@contextlib.asynccontextmanager
async def running(p: PushPipeline) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(p.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - what is waited for (a count at the stand-in) has no event
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("queues", [1, 4])
async def test_a_burst_to_one_token_is_one_push_per_notice_each_carrying_its_own(store: RedisStore,
                                                                               queues: int) -> None:
    """Parity mode: 50 NMSGs for one token within one push's latency (as after a restart, when the SMP
    servers hand over what waited) are 50 pushes, and each carries the notice that caused it."""
    tok, nids = await active(store, queues)
    apns = Apns()
    p = pipeline(store, apns)
    burst = notices(server(1), nids, 50)
    async with running(p):
        for i in range(0, 50, 7):  # blocks of up to 7, as an SMP server packs them
            await p.accept(server(1), burst[i:i + 7])
        await p.settle()
    assert len(apns.delivered) == 50
    causes = sorted(carried(tok, s.body)[-1] for s in apns.delivered)
    assert causes == sorted(n.nonce for n in burst)
    assert all(len(carried(tok, s.body)) <= 6 for s in apns.delivered)


async def test_a_flooding_smp_server_does_not_hold_back_another(store: RedisStore) -> None:
    """Server 1 sends far more than APNs takes right now; server 2's reader is never made to wait, and its
    notice is pushed while server 1's backlog is still queued."""
    flood_tok, flood_nids = await active(store, 1, server(1))
    quiet_tok, quiet_nids = await active(store, 1, server(2))
    apns = Apns(gate=asyncio.Event())
    p = pipeline(store, apns, intake_per_server=64, batch_max=16, outgoing=32, senders=4)
    async with running(p):
        many = notices(server(1), flood_nids, 400)

        async def reader() -> None:  # server 1's SMP link, a block of 8 NMSGs at a time
            for i in range(0, len(many), 8):
                await p.accept(server(1), many[i:i + 8])

        flood = asyncio.create_task(reader())
        await until(lambda: apns.tries >= 4)  # APNs holds 4; the queues behind fill up; server 1 waits
        await asyncio.sleep(0.05)
        assert not flood.done()  # back-pressure on the server that floods
        async with asyncio.timeout(1.0):  # the other server's reader is not held
            await p.accept(server(2), notices(server(2), quiet_nids, 1))
        apns.gate.set()  # type: ignore[union-attr]
        await until(lambda: any(s.device == quiet_tok.device_token for s in apns.delivered))
        before = sum(s.device == flood_tok.device_token for s in apns.delivered)
        await flood
        await p.settle()
    assert before < 400 - 64  # the quiet server's push went out ahead of most of the flood
    assert len(apns.delivered) == 401


async def test_a_graceful_stop_keeps_queued_and_waiting_pushes_for_the_next_start(store: RedisStore) -> None:
    tok, nids = await active(store, 3)
    first = Apns(gate=asyncio.Event(), stall_after=12)  # 12 answered, then APNs stalls
    p = pipeline(store, first, senders=8)
    burst = notices(server(1), nids, 40)
    async with running(p):
        await p.accept(server(1), burst)
        await until(lambda: first.tries >= 8)  # 8 in flight at APNs, the rest queued
        first.retry = True
        first.gate.set()  # type: ignore[union-attr]
        await until(lambda: first.tries >= 20)  # 12 answered "retry later" (in the outbox), 8 stuck at APNs
        assert not await p.drain(grace_s=0.2)  # the drain cannot finish within its grace
    assert first.delivered == []
    second = Apns()
    async with running(again := pipeline(store, second)):
        await again.settle()
    assert sorted(carried(tok, s.body)[-1] for s in second.delivered) == sorted(n.nonce for n in burst)


async def test_pushes_of_a_process_that_died_are_sent_after_their_lease(store: RedisStore) -> None:
    """kill -9 while pushes were queued or at APNs: their outbox entries fall due when the lease ends, and
    another pipeline (the restarted process, or another instance) claims and sends them."""
    tok, nids = await active(store, 2)
    dead = Apns(gate=asyncio.Event())  # never answers
    burst = notices(server(1), nids, 20)
    async with running(p := pipeline(store, dead, senders=4, lease_s=0.3)):
        await p.accept(server(1), burst)
        await until(lambda: dead.tries >= 4)
    # the process is gone without a drain (its tasks cancelled mid-send)
    alive = Apns()
    async with running(q := pipeline(store, alive, lease_s=0.3)):
        await q.settle()
    assert sorted(carried(tok, s.body)[-1] for s in alive.delivered) == sorted(n.nonce for n in burst)


async def test_a_retry_is_built_again_with_its_own_notice_and_the_newest_others(store: RedisStore) -> None:
    tok, nids = await active(store, 8)
    apns = Apns(retry=True)
    p = pipeline(store, apns, backoff=Fixed(2.0))
    first = notices(server(1), nids, 1)
    async with running(p):
        await p.accept(server(1), first)
        await until(lambda: p.retries_waiting == 1)  # due again in 2 s
        apns.retry = False
        later = notices(server(1), nids[1:], 7, start_ms=1_700_000_001_000)
        await p.accept(server(1), later)
        await until(lambda: len(apns.delivered) == 7)  # the 7 later ones, before the retry falls due
        await p.settle()
    lists = [carried(tok, s.body) for s in apns.delivered]
    [retried] = [items for items in lists if items[-1] == first[0].nonce]
    assert len(retried) == 6 and retried[:-1] == [n.nonce for n in later[-5:]]
    assert len(apns.delivered) == 8


def test_settings_that_do_not_fit_the_redis_pool_are_refused() -> None:
    with pytest.raises(ValueError, match="Redis connections"):
        PipelineSettings(store_gate=60).check(redis_pool=64, reserved=20)
    with pytest.raises(ValueError, match="at least 1"):
        PipelineSettings(senders=0).check(redis_pool=64, reserved=20)
    PipelineSettings().check(redis_pool=64, reserved=40)


async def test_each_push_carries_its_notice_whatever_order_the_batches_store_them_in(store: RedisStore) -> None:
    """The fair intake takes notices from several SMP servers in turn, so a batch can store a notice after
    newer ones of the same token (from another server): its push must still carry it, last, even when more
    than five newer ones are already stored (found by a lease test: 100 NMSGs for one token's 100 queues)."""
    tok, nids = await active(store, 20)
    apns = Apns()
    p = pipeline(store, apns)
    # arrival times falling within the batch: every notice is stored after all the newer ones
    burst = [Notice(server(1), nids[i % 20], 1_700_000_100_000 - i, os.urandom(24), b"m") for i in range(40)]
    async with running(p):
        await p.accept(server(1), burst)
        await p.settle()
    assert len(apns.delivered) == 40
    lists = [carried(tok, s.body) for s in apns.delivered]
    assert sorted(items[-1] for items in lists) == sorted(n.nonce for n in burst)
    assert all(len(items) <= 6 and len(set(items)) == len(items) for items in lists)


async def test_pushes_a_live_process_is_still_sending_are_not_claimed_by_another(store: RedisStore) -> None:
    """Two live instances: pushes that wait longer than one lease (a slow APNs, a long queue) on the instance
    that decided them are not claimed and sent by the other: their claims are extended while they wait."""
    tok, nids = await active(store, 2)
    slow = Apns(gate=asyncio.Event())
    other = Apns()
    burst = notices(server(1), nids, 20)
    async with running(p := pipeline(store, slow, senders=4, lease_s=0.3)), \
            running(pipeline(store, other, lease_s=0.3)):
        await p.accept(server(1), burst)
        await until(lambda: slow.tries >= 4)
        await asyncio.sleep(1.5)  # five leases; the other claims every 0.05 s: nothing may be due for it
        assert other.tries == 0
        assert slow.gate is not None
        slow.gate.set()
        await p.settle()
    assert other.tries == 0
    assert sorted(carried(tok, s.body)[-1] for s in slow.delivered) == sorted(n.nonce for n in burst)
