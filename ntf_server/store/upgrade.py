"""Authenticating the records of a data set written before records were authenticated whole, once, at connect.

Before, token records carried no MACs (codec.py `km`, `pm`, `sm`) and a subscription's notifier was sealed
with associated data ``"sub" ‖ r`` only, not its token id (keys.py `sub_aad`). The readers now require
both, so a data set from before is upgraded before anything reads it: every token gets its MACs (its
sealed fields are checked on the way, so a corrupted one is counted and left as it is, failing reads as
before), every subscription is sealed again under the new associated data, and the stand-in subscription
too. ``P meta`` field ``auth`` marks the data set done; an upgrade cut short is finished at the next
connect (records already done are recognised and skipped). It reads each record once (its time on a large
data set is not measured yet). A data set created by this version is marked done at once.

Runs while nothing else uses the data set (``RedisStore.connect``, before the server serves), which the
state lock already ensures for one server per data set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from ntf_server.observability.logevents import log_event
from ntf_server.store.atrest import AtRest
from ntf_server.store.codec import DUMMY_NOTIFIER, DUMMY_SUB_ID, DUMMY_TOKEN_ID, TokenCodec
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import R_BYTES, PackedSub, pack_sub, seal_notifier, sub_aad, unpack_sub

log = logging.getLogger(__name__)

TOKEN_BATCH: Final = 500
BUCKET_BATCH: Final = 64
DONE_FIELD: Final = "auth"


@dataclass(frozen=True, slots=True)
class Upgraded:
    tokens: int = 0
    subscriptions: int = 0
    unreadable: int = 0  # records that did not open even the old way: left as they were


def legacy_aad(r: bytes) -> bytes:
    """The associated data of a sealed notifier before records were authenticated whole."""
    return b"sub" + r


async def authenticate_records(d: DataSet, codec: TokenCodec) -> Upgraded:
    meta = d.keys.g("meta")
    if await d.call(d.r.hexists, meta, DONE_FIELD):
        return Upgraded()
    tokens, bad_tokens = await _tokens(d, codec)
    subs, bad_subs = await _subscriptions(d)
    await _standin(d)
    await d.call(d.r.hset, meta, DONE_FIELD, 1)
    done = Upgraded(tokens, subs, bad_tokens + bad_subs)
    if tokens or subs or done.unreadable:
        log_event(log, "store.records_authenticated", tokens=tokens, subscriptions=subs, unreadable=done.unreadable)
    return done


async def _tokens(d: DataSet, codec: TokenCodec) -> tuple[int, int]:
    done = bad = 0
    start = 0
    while tids := await d.call(d.r.zrange, d.keys.g("used"), start, start + TOKEN_BATCH - 1):
        start += len(tids)
        async with d.pipeline() as pipe:
            for tid in tids:
                pipe.hgetall(d.keys.token(tid))
            hashes = await pipe.execute()
        async with d.pipeline() as pipe:
            for tid, h in zip(tids, hashes, strict=True):
                if not h or b"km" in h:
                    continue
                try:
                    t = codec.decode_unchecked(tid, h)
                except StoreError:
                    bad += 1
                    continue
                pipe.hset(d.keys.token(tid), items=codec.macs(t))
                done += 1
            await pipe.execute()
    return done, bad


async def _subscriptions(d: DataSet) -> tuple[int, int]:
    if not int(await d.call(d.r.get, d.keys.g("n:sub")) or 0):
        return 0, 0
    numbers = sorted(int(n) for n in await d.call(d.r.hkeys, d.keys.g("srv:addr")))
    done = bad = 0
    for srv in numbers:
        for first in range(0, d.keys.buckets, BUCKET_BATCH):
            keys = [d.keys.bucket(srv, b) for b in range(first, min(first + BUCKET_BATCH, d.keys.buckets))]
            async with d.pipeline() as pipe:
                for key in keys:
                    pipe.hgetall(key)
                buckets = await pipe.execute()
            async with d.pipeline() as pipe:
                for key, h in zip(keys, buckets, strict=True):
                    for r, value in h.items():
                        resealed = _resealed(d.a, r, value)
                        if resealed is None:
                            continue
                        if resealed == b"":
                            bad += 1
                            continue
                        pipe.hset(key, r, resealed)
                        done += 1
                await pipe.execute()
    return done, bad


def _resealed(a: AtRest, r: bytes, value: bytes) -> bytes | None:
    """The value sealed under the new associated data; None if it already is, b"" if it opens neither way."""
    p = unpack_sub(value)
    try:
        a.open(p.sealed, sub_aad(r[:R_BYTES], p.token_id))
        return None
    except StoreError:
        pass
    try:
        plain = a.open(p.sealed, legacy_aad(r[:R_BYTES]))
    except StoreError:
        return b""
    return pack_sub(PackedSub(p.token_id, p.service_assoc, p.status, a.seal(plain, sub_aad(r[:R_BYTES], p.token_id))))


async def _standin(d: DataSet) -> None:
    """The stand-in subscription read for unknown ids (dataset.py `write_dummies` writes it only once)."""
    sealed = seal_notifier(d.a, DUMMY_SUB_ID[:R_BYTES], DUMMY_TOKEN_ID, *DUMMY_NOTIFIER)
    current = await d.call(d.r.hget, d.keys.g("dummy"), "sub")
    if current is not None and _resealed(d.a, DUMMY_SUB_ID[:R_BYTES], current) is None:
        return
    await d.call(d.r.hset, d.keys.g("dummy"), "sub", pack_sub(PackedSub(DUMMY_TOKEN_ID, False, "ACTIVE", sealed)))
