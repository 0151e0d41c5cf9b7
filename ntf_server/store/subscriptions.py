"""Subscriptions: `SNEW`/`SCHK`/`SDEL` (§4.3–4.4), status changes from SMP answers (§4.6), paging
one SMP server's subscriptions for resubscription.

Keys (keys.py, which also has the record and id layouts): `P s:<server number>:<bucket>` (hash: r ->
packed record), `P t{T}:subs` (hash: sub id -> server number, the token's subscriptions, for cascades),
and the counters `P n:sub` and `P srv:count` (per server), kept by the scripts. There is no key per
subscription and no separate (server, notifier id) index: r = HMAC(server, notifier id) is both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from typing import Final, TypeVar

from ntf_server.protocol.encoding import SMPServer, enc_smp_server
from ntf_server.store.base import NO_CAPS, SubCaps, SubCreate
from ntf_server.store.codec import DUMMY_SERVER, DUMMY_SUB_ID, TokenCodec
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import FencedOut, StoreError
from ntf_server.store.keys import (
    SUB_ID_BYTES,
    TIED_AT,
    PackedSub,
    decode_sub,
    make_sub_id,
    open_sub,
    pack_sub,
    parse_sub_id,
    seal_notifier,
    sub_r,
)
from ntf_server.store.recent import Recent
from ntf_server.store.records import (
    RESUBSCRIBE_KINDS,
    SUB_NEW,
    ResubQueue,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
    TokenRecord,
)
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.services import md5_of
from ntf_server.store.sub_scripts import SubScripts

_PAGE_BUCKETS: Final = 64  # buckets fetched per pipeline while paging one SMP server
_STATUS_BATCH: Final = 1000
_ONE: Final = ord("1")  # TOKENS_ACTIVE's flag for an ACTIVE token
# r of (server number, notifier id) as resubscription's paging found it, for the status writes that follow
# (PENDING when the NSUB is sent, ACTIVE when it is answered): each is an HMAC otherwise, twice per
# subscription (tests/bench/resubscribe.py). Two generations of this many entries (~200 bytes each): the
# older is dropped when the newer fills, so what was paged recently stays; a miss just computes r.
_R_CACHE_GENERATION: Final = 50_000
_Item = TypeVar("_Item", SubscriptionRecord, ResubQueue)  # what paging makes of each record


class RedisSubscriptions:
    def __init__(self, data: DataSet, servers: ServerRegistry, tokens: TokenCodec) -> None:
        self._d = data
        self._servers = servers
        self._tokens = tokens  # the verification lookups answer the token too
        self._lua = SubScripts(data)
        self._r: Recent[tuple[int, bytes], bytes] = Recent(_R_CACHE_GENERATION)

    def __repr__(self) -> str:
        return f"<RedisSubscriptions prefix={self._d.keys.prefix!r}>"

    def _decode(self, sid: bytes, server: SMPServer, value: bytes) -> SubscriptionRecord:
        return decode_sub(self._d.a, sid, server, value)

    def _found_or_dummy(self, sid: bytes, server: SMPServer, found: bool, value: bytes) -> SubscriptionRecord | None:
        if found:
            return self._decode(sid, server, value)
        if value:
            self._decode(DUMMY_SUB_ID, DUMMY_SERVER, value)  # the work a real record costs; result unused
        return None

    async def create_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes, notifier_key: bytes,
        caps: SubCaps = NO_CAPS,
    ) -> tuple[SubCreate, SubscriptionRecord | None]:
        """`SNEW` (§4.4): a new subscription in status NEW, or — same token and same key — the
        existing one (idempotent retry). Another token or another key: CONFLICT (answer AUTH). A new one
        beyond the token's `caps`: QUOTA (an idempotent retry is still answered)."""
        if not 0 < len(notifier_id) <= 255:
            raise StoreError("notifier id must be 1..255 bytes")
        server = server.normalized()
        srv = await self._servers.number(server, create=True)
        assert srv is not None
        r = sub_r(self._d.a, server, notifier_id)
        sid = make_sub_id(self._d.a, r, srv)
        sealed = seal_notifier(self._d.a, r, token_id, notifier_id, notifier_key)
        value = pack_sub(PackedSub(token_id, False, SUB_NEW.to_text(), sealed))
        res = await self._lua.create(token_id, sid, srv, value, caps.subscriptions, caps.servers)
        if res[0] == b"NOTOKEN":
            return SubCreate.NO_TOKEN, None
        if res[0] == b"QUOTA":
            return SubCreate.QUOTA, None
        if res[0] == b"CREATED":
            return SubCreate.CREATED, SubscriptionRecord(sid, token_id, server, notifier_id, notifier_key, SUB_NEW)
        existing = self._decode(sid, server, res[1])
        if existing.token_id == token_id and existing.notifier_key == notifier_key:
            return SubCreate.EXISTS, existing
        return SubCreate.CONFLICT, None

    async def get_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        r, srv = parse_sub_id(self._d.a, sub_id)
        server = await self._servers.address(srv) if srv > 0 else None
        if server is None:
            return None
        value = await self._d.call(self._d.r.hget, self._d.keys.sub_bucket(srv, r), r)
        return self._decode(sub_id, server, value) if value is not None else None

    async def subscription_and_token(self, sub_id: bytes) -> tuple[SubscriptionRecord | None, TokenRecord | None]:
        """`SCHK`/`SDEL` verification (§4.3): the subscription and its token in one round trip, with the
        same Redis work, reply shape and decryptions whether or not they exist (STYLE 4). A malformed id is
        an unknown one."""
        sid = sub_id if len(sub_id) == SUB_ID_BYTES else DUMMY_SUB_ID
        r, srv = parse_sub_id(self._d.a, sid)
        sfound, value, addr, tfound, packed, tid = await self._lua.lookup_sub(srv, r, self._tokens.pick(sid))
        server = self._servers.cached(srv) if sfound else DUMMY_SERVER
        if server is None:
            server = self._servers.remember(srv, addr)
        sub = self._found_or_dummy(sid, server, bool(sfound and sid is sub_id), value)
        tok = self._tokens.found_or_standin(tfound if sub else 0, packed, tid)
        return sub, tok

    async def token_and_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes
    ) -> tuple[TokenRecord | None, SubscriptionRecord | None]:
        """`SNEW` verification (§4.3): the token and the subscription of (server, notifier id) in one
        round trip, with the same work whether or not either exists (STYLE 4)."""
        server = server.normalized()
        enc = enc_smp_server(server)
        r = sub_r(self._d.a, server, notifier_id)
        pick = self._tokens.pick(token_id)
        tfound, packed, tid, n, sfound, value = await self._lua.lookup_snew(
            token_id, self._servers.index(enc), r, pick
        )
        if n:
            self._servers.learn(enc, server, n)
        sub = self._found_or_dummy(make_sub_id(self._d.a, r, n), server, bool(sfound), value)
        return self._tokens.found_or_standin(tfound, packed, tid), sub

    async def _of_active_tokens(self, recs: list[_Item], known: dict[bytes, bool]) -> list[_Item]:
        """The records whose token is ACTIVE: one pipelined status read per token not in ``known`` (the
        statuses read earlier in the same page-through), which it extends."""
        tids = list({rec.token_id for rec in recs} - known.keys())
        if tids:
            flags = await self._lua.tokens_active(tids)
            known.update((tid, flag == _ONE) for tid, flag in zip(tids, flags, strict=True))
        return [rec for rec in recs if known[rec.token_id]]

    async def has_live_subscriptions(self, server: SMPServer) -> bool:
        """Whether any subscription would be resubscribed on ``server`` (a status of RESUBSCRIBE_KINDS and an
        ACTIVE token): its SMP link is needed. Stops at the first one."""
        async with contextlib.aclosing(self.iter_server_queues(server, 1)) as pages:
            async for _ in pages:
                return True
        return False

    async def token_subscriptions(self, token_id: bytes) -> list[SubscriptionRecord]:
        """Every subscription of a token (for subscribing them when it becomes ACTIVE)."""
        index = await self._d.call(self._d.r.hgetall, self._d.keys.token_subs(token_id))
        out = []
        for sid, srv in index.items():
            server = await self._servers.address(int(srv))
            if server is None:
                continue
            r, _ = parse_sub_id(self._d.a, sid)
            value = await self._d.call(self._d.r.hget, self._d.keys.sub_bucket(int(srv), r), r)
            if value is not None:
                out.append(self._decode(sid, server, value))
        return out

    async def delete_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        """`SDEL`: removes the subscription and its last notification; returns what was removed."""
        _, srv = parse_sub_id(self._d.a, sub_id)
        server = await self._servers.address(srv) if srv > 0 else None
        if server is None:
            return None
        value = await self._lua.delete(sub_id, srv)
        if not value:
            return None
        rec = self._decode(sub_id, server, value)
        if rec.service_assoc:
            await self._servers.untie_deleted(srv, [rec.notifier_id])
        return rec

    async def set_subscription_statuses(
        self,
        server: SMPServer,
        notifier_ids: Sequence[bytes],
        status: SubStatus,
        service_assoc: bool | None = None,
        only_from: Collection[SubStatusKind] | None = None,
        fence: str | None = None,
    ) -> int:
        """Bulk status change for NSUB results, END/DELD, disconnects (§4.6). Returns how many
        subscriptions changed; unknown ids are skipped. Atomic per batch of 1000. With ``fence`` (a lease's
        value, store/leases.py ``fence``), nothing is written unless that lease still holds the server:
        ``FencedOut``."""
        server = server.normalized()
        srv = await self._servers.number(server, create=False)
        if srv is None:
            return 0
        assoc = "-" if service_assoc is None else ("1" if service_assoc else "0")
        kinds = "," + ",".join(k.value for k in only_from) + "," if only_from is not None else ""
        changed = 0
        for i in range(0, len(notifier_ids), _STATUS_BATCH):
            nids = notifier_ids[i : i + _STATUS_BATCH]
            rs = [self._r.get((srv, nid)) or sub_r(self._d.a, server, nid) for nid in nids]
            # Tying or untying: each record's MD5(notifier id) too, for the server's service ties (services.py).
            args = rs if service_assoc is None else [x for r, m in zip(rs, md5_of(nids), strict=True) for x in (r, m)]
            n = int(await self._lua.set_status(srv, status.to_text(), assoc, kinds, fence or "", args))
            if n < 0:
                raise FencedOut("the SMP server's lease is another instance's now")
            changed += n
        return changed

    def iter_server_subscriptions(
        self, server: SMPServer, page_size: int = 900, kinds: Collection[SubStatusKind] | None = None,
        active_tokens_only: bool = False, untied_only: bool = False,
    ) -> AsyncGenerator[list[SubscriptionRecord], None]:
        """Pages of one SMP server's subscriptions (filtered by status kind, and with ``active_tokens_only``
        by their token's status: only ACTIVE tokens' subscriptions open SMP connections, with
        ``untied_only`` without those tied to our service, skipped before decryption: NSUBS has them), reading
        `_PAGE_BUCKETS` buckets at a time, so memory stays constant however many there are. A subscription
        created or deleted while paging may or may not be seen; every one present throughout is seen
        exactly once."""
        return self._pages(server, page_size, kinds, active_tokens_only, untied_only, self._record)

    def iter_server_queues(self, server: SMPServer, page_size: int = 900, untied_only: bool = False
                           ) -> AsyncGenerator[list[ResubQueue], None]:
        """What resubscribing ``server`` sends NSUBs for: as ``iter_server_subscriptions`` with
        ``RESUBSCRIBE_KINDS`` and ``active_tokens_only``, without subscription ids or records."""
        return self._pages(server, page_size, RESUBSCRIBE_KINDS, True, untied_only, self._queue)

    def _record(self, srv: int, server: SMPServer, r: bytes, value: bytes) -> tuple[SubscriptionRecord, SubStatusKind]:
        rec = decode_sub(self._d.a, make_sub_id(self._d.a, r, srv), server, value)
        return rec, rec.status.kind

    def _queue(self, srv: int, server: SMPServer, r: bytes, value: bytes) -> tuple[ResubQueue, SubStatusKind]:
        p, nid, key, status = open_sub(self._d.a, r, value)
        self._r.put((srv, nid), r)  # resubscription writes its status next: PENDING, then ACTIVE
        return ResubQueue(nid, key, p.service_assoc, p.token_id), status.kind

    async def _pages(
        self, server: SMPServer, page_size: int, kinds: Collection[SubStatusKind] | None, active_tokens_only: bool,
        untied_only: bool, make: Callable[[int, SMPServer, bytes, bytes], tuple[_Item, SubStatusKind]],
    ) -> AsyncGenerator[list[_Item], None]:
        server = server.normalized()
        srv = await self._servers.number(server, create=False)
        if srv is None:
            return
        page: list[_Item] = []
        token_active: dict[bytes, bool] = {}  # read once per token while paging (many subscriptions each)
        nb = self._d.keys.buckets
        for start in range(0, nb, _PAGE_BUCKETS):
            async with self._d.pipeline() as pipe:
                for b in range(start, min(start + _PAGE_BUCKETS, nb)):
                    pipe.hgetall(self._d.keys.bucket(srv, b))
                buckets = await pipe.execute()
            found = []
            for h in buckets:
                for r, value in h.items():
                    if untied_only and value[TIED_AT:TIED_AT + 1] == b"1":
                        continue
                    item, kind = make(srv, server, r, value)
                    if kinds is None or kind in kinds:
                        found.append(item)
            page += await self._of_active_tokens(found, token_active) if active_tokens_only and found else found
            while len(page) >= page_size:
                yield page[:page_size]
                page = page[page_size:]
        if page:
            yield page
