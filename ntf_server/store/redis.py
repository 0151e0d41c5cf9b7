"""`Store` on Redis/Valkey with redis-py asyncio (schema: keys.py; atomic changes: scripts.py).

Reads are single commands or pipelines; every write touching several keys is one Lua script. Secret
fields are sealed with AES-GCM (atrest.py) before they leave the process, index keys are HMACs, so the
Redis data set holds no device token, DH secret, registration code, notifier id or notifier key in clear.
Connection errors are retried by redis-py with capped exponential backoff and jitter; what still fails
becomes `StoreUnavailable`, any other Redis error `StoreError` (store/health.py translates, in one place).
While the server runs `watch_health()`, an unreachable Redis makes calls fail at once instead of each
waiting through the retries, until a background probe finds it again.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any, Final

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ntf_server.protocol.encoding import CodecError, SMPServer, dec_smp_server, decode_all, enc_smp_server
from ntf_server.store import scripts
from ntf_server.store.atrest import AtRest
from ntf_server.store.base import (
    NewNotification,
    NtfOutcome,
    RemovedSub,
    Store,
    StoreCounts,
    StoredNotification,
    SubCreate,
    TokenCreate,
)
from ntf_server.store.errors import StoreError
from ntf_server.store.health import StoreHealth, backoff_delays
from ntf_server.store.keys import (
    DEFAULT_BUCKETS,
    HASH_MAX_LISTPACK_VALUE,
    MAX_BUCKETS,
    R_BYTES,
    SUB_ID_BYTES,
    TOKEN_ID_BYTES,
    Keys,
    PackedSub,
    make_sub_id,
    pack_sub,
    parse_sub_id,
    unpack_sub,
)
from ntf_server.store.records import (
    CONFIRM_KEEPS,
    DAY_S,
    SUB_NEW,
    TOKEN_ACTIVE,
    VERIFY_ALLOWED,
    LastNotification,
    PushProvider,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
    day_of,
)

MAX_LAST_NTFS: Final = 6  # spec §5.7 `maxNtfs`
NONCE_BYTES: Final = 24
_PAGE_BUCKETS: Final = 64  # buckets fetched per pipeline while paging one SMP server
_STATUS_BATCH: Final = 1000
# Token hash fields sealed with AES-GCM (associated data: field name ‖ token id).
_SEALED: Final = ("dt", "dhk", "ds", "rc")
# The fixed stand-ins that verification lookups read and decrypt where there is no record (scripts.py
# `_LOOKUP`; a missing token is stood in for by another, real token when there is one): sized like real ones
# (hex APNs token, Ed25519/X25519 DER keys, 24-byte notifier id). The lookups flag every stand-in "not
# found", whatever id was asked for.
DUMMY_TOKEN_ID: Final = bytes(TOKEN_ID_BYTES)
DUMMY_SUB_ID: Final = bytes(SUB_ID_BYTES)
DUMMY_SERVER: Final = SMPServer(("dummy.invalid",), "5223", bytes(32))
_DUMMY_TOKEN: Final = TokenRecord(
    token_id=DUMMY_TOKEN_ID,
    provider=PushProvider.APNS_PROD,
    device_token=b"0" * 64,
    status=TOKEN_ACTIVE,
    verify_key=bytes(44),
    dh_public=bytes(44),
    dh_private=bytes(48),
    dh_secret=bytes(32),
    reg_code=bytes(32),
)
_DUMMY_NOTIFIER: Final = (bytes(24), bytes(48))  # notifier id, PKCS#8 Ed25519/X25519 key


def _no_sub() -> StoredNotification:
    return StoredNotification(NtfOutcome.NO_SUBSCRIPTION, None, [])


def _unpack_hash(packed: bytes) -> dict[bytes, bytes]:
    """A hash packed by the lookup scripts (scripts.py `pack`): u16-length-prefixed field, value, ..."""
    items = []
    i, end = 0, len(packed)
    while i < end:
        n = int.from_bytes(packed[i : i + 2], "big")
        items.append(packed[i + 2 : i + 2 + n])
        i += 2 + n
    if i != end or len(items) % 2:
        raise StoreError("corrupted lookup reply")
    return dict(zip(items[::2], items[1::2], strict=True))


def _text(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


# Called twice per subscription while resubscribing (PENDING, then ACTIVE): the encoding of the same few
# servers was a tenth of the pool's CPU there (tests/bench/resubscribe.py). SMPServer is frozen, hashable.
_enc_server = functools.lru_cache(maxsize=4096)(enc_smp_server)


class RedisStore:
    """The production store. Create with `await RedisStore.connect(url, master_key)`."""

    def __init__(self, client: Redis, atrest: AtRest, prefix: str, buckets: int) -> None:
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be 1..{MAX_BUCKETS}")
        self._r = client
        self._a = atrest
        self._k = Keys(prefix, buckets)
        self._health = StoreHealth()
        self._srv_num: dict[bytes, int] = {}  # server numbers never change once assigned
        self._srv_addr: dict[int, SMPServer] = {}
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in dir(scripts)
            if name.isupper() and not name.startswith("_")
        }

    @classmethod
    async def connect(
        cls,
        url: str,
        master_key: bytes,
        *,
        prefix: str = "ntf:",
        buckets: int | None = None,
        retries: int = 6,
        max_connections: int = 64,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 10.0,
    ) -> RedisStore:
        """`buckets` (per SMP server) is fixed when the data set is created: None means "what the data set
        uses", or DEFAULT_BUCKETS for a new one; a different explicit value is refused. The timeouts bound
        how long a call can hang on a Redis host that stopped answering (no call here blocks on purpose)."""
        retry = Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries)
        client = Redis.from_url(
            url,
            retry=retry,
            retry_on_error=[rex.ConnectionError, rex.TimeoutError],
            max_connections=max_connections,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
        )
        store = cls(client, AtRest(master_key), prefix, buckets or DEFAULT_BUCKETS)
        try:
            await store._check_meta(buckets)
            await store._write_dummies()
        except BaseException:
            await client.aclose()
            raise
        return store

    async def _check_meta(self, requested_buckets: int | None) -> None:
        """Adopt the data set's bucket count; refuse another explicit one or another store key."""
        check = self._a.index(b"store key check").hex()
        meta = self._k.g("meta")
        with self._health.guard():
            await self._r.hsetnx(meta, "buckets", self._k.buckets)
            await self._r.hsetnx(meta, "keycheck", check)
            vals: Any = await self._r.hmget(meta, ["buckets", "keycheck"])
        buckets, stored_check = vals
        if requested_buckets is not None and int(buckets) != requested_buckets:
            raise StoreError(f"data set uses {int(buckets)} buckets per server, configured {requested_buckets}")
        self._k = Keys(self._k.prefix, int(buckets))
        if stored_check.decode() != check:
            raise StoreError("the store key does not match the one this data set was written with")

    async def _write_dummies(self) -> None:
        """Store the stand-in records once per data set (HSETNX: concurrent instances agree, and a field
        written by either decrypts, as both use the same store key)."""
        token = self._encode_token(_DUMMY_TOKEN)
        nid, key = _DUMMY_NOTIFIER
        sealed = self._a.seal(bytes([len(nid)]) + nid + key, b"sub" + DUMMY_SUB_ID[:R_BYTES])
        sub = pack_sub(PackedSub(DUMMY_TOKEN_ID, False, TOKEN_ACTIVE.to_text(), sealed))
        with self._health.guard():
            async with self._r.pipeline(transaction=False) as pipe:
                for i in range(0, len(token), 2):
                    pipe.hsetnx(self._k.g("dummy:t"), str(token[i]), token[i + 1])
                pipe.hsetnx(self._k.g("dummy"), "sub", sub)
                pipe.hsetnx(self._k.g("dummy"), "addr", enc_smp_server(DUMMY_SERVER))
                await pipe.execute()

    async def config_advice(self) -> list[str]:
        """Redis settings that would cost memory or durability with this schema (for a start-up log);
        empty when all is well or when CONFIG is not available (managed Redis)."""
        try:
            cfg: Any = await self._r.config_get("*")
        except rex.RedisError:
            return []
        text = {_text(k): _text(v) for k, v in cfg.items()}  # redis-py already decodes some replies
        get = text.get
        advice = []
        if int(get("hash-max-listpack-value") or get("hash-max-ziplist-value") or 0) < HASH_MAX_LISTPACK_VALUE:
            advice.append(
                f"set hash-max-listpack-value {HASH_MAX_LISTPACK_VALUE} in redis.conf: subscription buckets "
                "otherwise use ~20% more memory"
            )
        if get("appendonly") != "yes":
            advice.append("appendonly is off: a Redis restart loses what was written since the last snapshot")
        return advice

    @property
    def client(self) -> Redis:
        """The Redis connection pool, for the store modules that keep their own keys (policy, budgets)."""
        return self._r

    @property
    def prefix(self) -> str:
        return self._k.prefix

    @property
    def buckets(self) -> int:
        return self._k.buckets

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self._k.prefix!r} buckets={self._k.buckets}>"

    async def close(self) -> None:
        await self._r.aclose()

    @property
    def healthy(self) -> bool:
        return self._health.up

    async def watch_health(self, delays: Callable[[], Iterator[float]] = backoff_delays) -> None:
        """Long-lived part of the server: fail fast while Redis is away, reconnect in the background."""
        await self._health.watch(self._r.ping, delays)

    async def _run(self, name: str, *args: Any) -> Any:
        with self._health.guard():
            return await self._scripts[name](keys=[], args=[self._k.prefix, self._k.buckets, *args])

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # redis-py types replies as unions of bytes/str; this store always uses bytes replies.
        with self._health.guard():
            return await fn(*args)

    # ------------------------------------------------------------------ tokens

    def _dt_index(self, provider: PushProvider, device_token: bytes) -> str:
        return self._a.index(b"dt", provider.value.encode(), device_token).hex()

    def _encode_token(self, t: TokenRecord) -> list[bytes | str | int]:
        fields: dict[str, bytes | str | int] = {
            "p": t.provider.value,
            "st": t.status.to_text(),
            "vk": t.verify_key,
            "dhp": t.dh_public,
            "ci": t.cron_interval_min,
            "ud": t.last_used_day,
            "x": self._dt_index(t.provider, t.device_token),
            "vh": self._a.index(b"vk", t.verify_key),
        }
        for name, value in zip(_SEALED, (t.device_token, t.dh_private, t.dh_secret, t.reg_code), strict=True):
            fields[name] = self._a.seal(value, name.encode() + t.token_id)
        if t.cron_sent_at is not None:
            fields["cs"] = t.cron_sent_at
        return [item for kv in fields.items() for item in kv]

    def _decode_token(self, tid: bytes, h: dict[bytes, bytes]) -> TokenRecord:
        try:
            opened = {n: self._a.open(h[n.encode()], n.encode() + tid) for n in _SEALED}
            cs = h.get(b"cs")
            return TokenRecord(
                token_id=tid,
                provider=PushProvider.from_code(h[b"p"]),
                device_token=opened["dt"],
                status=TokenStatus.from_text(h[b"st"].decode()),
                verify_key=h[b"vk"],
                dh_public=h[b"dhp"],
                dh_private=opened["dhk"],
                dh_secret=opened["ds"],
                reg_code=opened["rc"],
                cron_interval_min=int(h[b"ci"]),
                cron_sent_at=int(cs) if cs is not None else None,
                last_used_day=int(h[b"ud"]),
            )
        except (KeyError, ValueError) as e:
            raise StoreError(f"corrupted token record: {type(e).__name__}") from e

    async def create_token(self, token: TokenRecord, now: float | None = None) -> TokenCreate:
        """``now`` is the creation time (default: the wall clock); until the token is verified it is also
        in the `unv` index that ``expire_unverified`` walks."""
        if len(token.token_id) != TOKEN_ID_BYTES:
            raise StoreError("token id must be 24 bytes")
        fields = self._encode_token(token)
        x = self._dt_index(token.provider, token.device_token)
        vh = self._a.index(b"vk", token.verify_key)
        created = math.floor(time.time() if now is None else now)
        res = await self._run("CREATE_TOKEN", token.token_id, x, vh, token.last_used_day, created, *fields)
        if res in (b"OK", b"SAME"):  # SAME: a retried call whose first reply was lost
            return TokenCreate.CREATED
        if res == b"DUPLICATE":
            return TokenCreate.DUPLICATE
        raise StoreError("token id collision")

    async def get_token(self, token_id: bytes) -> TokenRecord | None:
        """One round trip and four decryptions whether or not the token exists (see `_LOOKUP`)."""
        found, packed, tid = await self._run("LOOKUP_TOKEN", token_id, self._pick(token_id))
        return self._token_or_standin(found, packed, tid)

    def _pick(self, token_id: bytes) -> int:
        """Which token stands in for a missing one: the same for the same id, as a real record would be."""
        return int.from_bytes(self._a.index(b"stand-in", token_id, length=4), "big")

    def _token_or_standin(self, found: int, packed: bytes, tid: bytes) -> TokenRecord | None:
        h = _unpack_hash(packed)
        if found:
            return self._decode_token(tid, h)
        if h:
            self._decode_token(tid or DUMMY_TOKEN_ID, h)  # the work a real record costs; the result is unused
        return None

    async def _get_tokens(self, tids: Sequence[bytes]) -> list[TokenRecord]:
        with self._health.guard():
            async with self._r.pipeline(transaction=False) as pipe:
                for tid in tids:
                    pipe.hgetall(self._k.token(tid))
                hashes = await pipe.execute()
        return [self._decode_token(tid, h) for tid, h in zip(tids, hashes, strict=True) if h]

    async def find_tokens(self, provider: PushProvider, device_token: bytes) -> list[TokenRecord]:
        tids = await self._call(self._r.hkeys, self._k.dt_index(self._dt_index(provider, device_token)))
        found = await self._get_tokens(sorted(tids))
        return [t for t in found if t.provider is provider and t.device_token == device_token]

    async def find_token(self, provider: PushProvider, device_token: bytes, verify_key: bytes) -> TokenRecord | None:
        """The token of a repeat `TNEW` (spec §4.3): same provider, device token and verify key."""
        found = await self.find_tokens(provider, device_token)
        return next((t for t in found if t.verify_key == verify_key), None)

    async def replace_token(
        self, token_id: bytes, provider: PushProvider, device_token: bytes, reg_code: bytes
    ) -> bool:
        """`TRPL` (spec §4.4): new provider/device token/code, status REGISTERED, DH keys kept.

        False if the token is gone or the new device token is already registered with this verify key.
        """
        fields = [
            "p", provider.value,
            "dt", self._a.seal(device_token, b"dt" + token_id),
            "rc", self._a.seal(reg_code, b"rc" + token_id),
            "st", TokenStatusKind.REGISTERED.value,
        ]  # fmt: skip
        res = await self._run("REPLACE_TOKEN", token_id, self._dt_index(provider, device_token), *fields)
        return bool(res == b"OK")

    async def set_token_status(
        self, token_id: bytes, status: TokenStatus, only_from: Collection[TokenStatusKind] | None = None
    ) -> TokenStatus | None:
        """Set the status (only if the current kind is in `only_from`, when given); returns the status
        the token has afterwards, None if there is no such token."""
        if only_from is None:
            res = await self._run("SET_TOKEN_STATUS", token_id, status.to_text(), "except")
        else:
            kinds = [k.value for k in only_from]
            res = await self._run("SET_TOKEN_STATUS", token_id, status.to_text(), "only", *kinds)
        return TokenStatus.from_text(res[1].decode()) if res else None

    async def confirm_token(self, token_id: bytes) -> TokenStatus | None:
        """Verification push accepted: CONFIRMED unless already CONFIRMED/ACTIVE (spec §4.5)."""
        kinds = [k.value for k in CONFIRM_KEEPS]
        res = await self._run("SET_TOKEN_STATUS", token_id, TokenStatusKind.CONFIRMED.value, "except", *kinds)
        return TokenStatus.from_text(res[1].decode()) if res else None

    async def activate_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        """`TVFY` accepted: ACTIVE (only from REGISTERED/CONFIRMED/ACTIVE) and, in the same step, delete
        every other registration of the same device token with its subscriptions (spec §4.4)."""
        res = await self._run("ACTIVATE_TOKEN", token_id, *(k.value for k in VERIFY_ALLOWED))
        return res[0] == b"OK", await self._removed(res[1])

    async def delete_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        res = await self._run("DELETE_TOKEN", token_id)
        return bool(res[0]), await self._removed(res[1])

    async def touch_token(self, token_id: bytes, now: float) -> None:
        """Record that the token was used today (spec §4.3); drives expiry of abandoned tokens."""
        await self._run("TOUCH_TOKEN", token_id, day_of(now))

    async def set_cron_interval(self, token_id: bytes, minutes: int, now: float) -> bool:
        """`TCRN`: 0 turns periodic pushes off. The first one is due one interval from now — the Haskell
        server never sends it because `cron_sent_at` stays NULL (spec §5.10); we do."""
        if minutes < 0:
            raise ValueError("cron interval must be >= 0")
        return bool(await self._run("SET_CRON", token_id, minutes, math.floor(now) + 60 * minutes))

    async def mark_cron_sent(self, token_id: bytes, now: float) -> bool:
        return bool(await self._run("CRON_SENT", token_id, math.floor(now)))

    async def tokens_due_for_cron(self, now: float, limit: int = 1000) -> list[TokenRecord]:
        """ACTIVE tokens whose periodic push is due (spec §5.10); non-active ones are skipped, not lost."""
        due: list[TokenRecord] = []
        offset = 0
        while len(due) < limit:
            tids = await self._call(self._r.zrangebyscore, self._k.g("cron"), "-inf", now, offset, limit)
            if not tids:
                break
            offset += len(tids)
            due += [t for t in await self._get_tokens(tids) if t.status == TOKEN_ACTIVE]
        return due[:limit]

    async def expire_tokens(
        self, now: float, unused_days: int, batch: int = 100
    ) -> tuple[list[bytes], list[RemovedSub]]:
        """Delete tokens not used for `unused_days` days, with their subscriptions (the Haskell server
        never expires anything, spec §6.3). Each batch is one atomic script."""
        cutoff = day_of(now) - unused_days * DAY_S
        tids: list[bytes] = []
        removed: list[RemovedSub] = []
        while True:
            res = await self._run("EXPIRE_TOKENS", cutoff, batch)
            tids += res[0]
            removed += await self._removed(res[1])
            if len(res[0]) < batch:
                return tids, removed

    async def expire_unverified(
        self, now: float, after_s: float, batch: int = 100
    ) -> tuple[list[bytes], list[RemovedSub]]:
        """Delete tokens created `after_s` or more before `now` and never verified (TVFY), with their
        subscriptions. Walks only the `unv` index (a zset by creation time), one atomic batch at a time."""
        cutoff = math.floor(now - after_s)
        tids: list[bytes] = []
        removed: list[RemovedSub] = []
        while True:
            scanned, gone, flat = await self._run("EXPIRE_UNVERIFIED", cutoff, batch)
            tids += gone
            removed += await self._removed(flat)
            if scanned < batch:
                return tids, removed

    # ------------------------------------------------------------------ SMP servers

    async def _server_number(self, server: SMPServer, create: bool) -> int | None:
        enc = enc_smp_server(server)
        if (n := self._srv_num.get(enc)) is not None:
            return n
        idx = self._a.index(b"srv", enc).hex()
        if create:
            n = int(await self._run("REGISTER_SERVER", idx, enc))
        else:
            raw = await self._call(self._r.hget, self._k.g("srv:id"), idx)
            if raw is None:
                return None
            n = int(raw)
        self._srv_num[enc] = n
        self._srv_addr[n] = server
        return n

    async def _server_address(self, n: int) -> SMPServer | None:
        if (s := self._srv_addr.get(n)) is not None:
            return s
        raw = await self._call(self._r.hget, self._k.g("srv:addr"), n)
        return self._remember_server(n, raw) if raw is not None else None

    async def servers_with_subscriptions(self) -> list[SMPServer]:
        """SMP servers with at least one subscription (resubscription at start, spec §3.3)."""
        counts = await self._call(self._r.hgetall, self._k.g("srv:count"))
        servers = [await self._server_address(int(n)) for n, c in sorted(counts.items()) if int(c) > 0]
        return [s for s in servers if s is not None]

    # ------------------------------------------------------------------ subscriptions

    def _r_of(self, server: SMPServer, notifier_id: bytes) -> bytes:
        return self._a.index(b"sub", _enc_server(server), notifier_id, length=R_BYTES)

    def _decode_sub(self, sid: bytes, server: SMPServer, value: bytes) -> SubscriptionRecord:
        p = unpack_sub(value)
        plain = self._a.open(p.sealed, b"sub" + sid[:R_BYTES])
        n = plain[0]
        try:
            status = SubStatus.from_text(p.status)
        except ValueError as e:
            raise StoreError("corrupted subscription status") from e
        return SubscriptionRecord(sid, p.token_id, server, plain[1 : 1 + n], plain[1 + n :], status, p.service_assoc)

    async def _removed(self, flat: list[bytes]) -> list[RemovedSub]:
        out = []
        for i in range(0, len(flat), 3):
            server = await self._server_address(int(flat[i + 1]))
            if server is not None:
                rec = self._decode_sub(flat[i], server, flat[i + 2])
                out.append(RemovedSub(rec.sub_id, server, rec.notifier_id))
        return out

    async def create_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes, notifier_key: bytes
    ) -> tuple[SubCreate, SubscriptionRecord | None]:
        """`SNEW` (spec §4.4): a new subscription in status NEW, or — same token and same key — the
        existing one (idempotent retry). Another token or another key: CONFLICT (answer AUTH)."""
        if not 0 < len(notifier_id) <= 255:
            raise StoreError("notifier id must be 1..255 bytes")
        server = server.normalized()
        srv = await self._server_number(server, create=True)
        assert srv is not None
        r = self._r_of(server, notifier_id)
        sid = make_sub_id(self._a, r, srv)
        sealed = self._a.seal(bytes([len(notifier_id)]) + notifier_id + notifier_key, b"sub" + r)
        value = pack_sub(PackedSub(token_id, False, SUB_NEW.to_text(), sealed))
        res = await self._run("CREATE_SUB", token_id, sid, srv, value)
        if res[0] == b"NOTOKEN":
            return SubCreate.NO_TOKEN, None
        if res[0] == b"CREATED":
            return SubCreate.CREATED, SubscriptionRecord(sid, token_id, server, notifier_id, notifier_key, SUB_NEW)
        existing = self._decode_sub(sid, server, res[1])
        if existing.token_id == token_id and existing.notifier_key == notifier_key:
            return SubCreate.EXISTS, existing
        return SubCreate.CONFLICT, None

    async def get_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        r, srv = parse_sub_id(self._a, sub_id)
        server = await self._server_address(srv) if srv > 0 else None
        if server is None:
            return None
        value = await self._call(self._r.hget, self._k.sub_bucket(srv, r), r)
        return self._decode_sub(sub_id, server, value) if value is not None else None

    async def find_subscription(self, server: SMPServer, notifier_id: bytes) -> SubscriptionRecord | None:
        server = server.normalized()
        srv = await self._server_number(server, create=False)
        if srv is None:
            return None
        r = self._r_of(server, notifier_id)
        value = await self._call(self._r.hget, self._k.sub_bucket(srv, r), r)
        return self._decode_sub(make_sub_id(self._a, r, srv), server, value) if value is not None else None

    async def subscription_and_token(self, sub_id: bytes) -> tuple[SubscriptionRecord | None, TokenRecord | None]:
        """`SCHK`/`SDEL` verification (spec §4.3): the subscription and its token in one round trip, with the
        same Redis work, reply shape and decryptions whether or not they exist (STYLE 4). A malformed id is
        an unknown one."""
        sid = sub_id if len(sub_id) == SUB_ID_BYTES else DUMMY_SUB_ID
        r, srv = parse_sub_id(self._a, sid)
        sfound, value, addr, tfound, packed, tid = await self._run("LOOKUP_SUB", srv, r, self._pick(sid))
        server = self._srv_addr.get(srv) if sfound else DUMMY_SERVER
        if server is None:
            server = self._remember_server(srv, addr)
        sub = self._sub_or_dummy(sid, server, bool(sfound and sid is sub_id), value)
        tok = self._token_or_standin(tfound if sub else 0, packed, tid)
        return sub, tok

    async def token_and_subscription(
        self, token_id: bytes, server: SMPServer, notifier_id: bytes
    ) -> tuple[TokenRecord | None, SubscriptionRecord | None]:
        """`SNEW` verification (spec §4.3): the token and the subscription of (server, notifier id) in one
        round trip, with the same work whether or not either exists (STYLE 4)."""
        server = server.normalized()
        enc = enc_smp_server(server)
        r = self._r_of(server, notifier_id)
        idx = self._a.index(b"srv", enc).hex()
        tfound, packed, tid, n, sfound, value = await self._run("LOOKUP_SNEW", token_id, idx, r, self._pick(token_id))
        if n:
            self._srv_num[enc] = n
            self._srv_addr[n] = server
        sub = self._sub_or_dummy(make_sub_id(self._a, r, n), server, bool(sfound), value)
        return self._token_or_standin(tfound, packed, tid), sub

    def _remember_server(self, n: int, addr: bytes) -> SMPServer:
        try:
            s = decode_all(addr, dec_smp_server)
        except CodecError as e:
            raise StoreError("corrupted SMP server registry") from e
        self._srv_addr[n] = s
        self._srv_num[enc_smp_server(s)] = n
        return s

    def _sub_or_dummy(self, sid: bytes, server: SMPServer, found: bool, value: bytes) -> SubscriptionRecord | None:
        if found:
            return self._decode_sub(sid, server, value)
        if value:
            self._decode_sub(DUMMY_SUB_ID, DUMMY_SERVER, value)  # the work a real record costs; result unused
        return None

    async def delete_subscription(self, sub_id: bytes) -> SubscriptionRecord | None:
        """`SDEL`: removes the subscription and its last notification; returns what was removed."""
        _, srv = parse_sub_id(self._a, sub_id)
        server = await self._server_address(srv) if srv > 0 else None
        if server is None:
            return None
        value = await self._run("DELETE_SUB", sub_id, srv)
        return self._decode_sub(sub_id, server, value) if value else None

    async def set_subscription_statuses(
        self,
        server: SMPServer,
        notifier_ids: Sequence[bytes],
        status: SubStatus,
        service_assoc: bool | None = None,
        only_from: Collection[SubStatusKind] | None = None,
    ) -> int:
        """Bulk status change for NSUB results, END/DELD, disconnects (spec §4.6). Returns how many
        subscriptions changed; unknown ids are skipped. Atomic per batch of 1000."""
        server = server.normalized()
        srv = await self._server_number(server, create=False)
        if srv is None:
            return 0
        assoc = "-" if service_assoc is None else ("1" if service_assoc else "0")
        kinds = "," + ",".join(k.value for k in only_from) + "," if only_from is not None else ""
        changed = 0
        for i in range(0, len(notifier_ids), _STATUS_BATCH):
            rs = [self._r_of(server, nid) for nid in notifier_ids[i : i + _STATUS_BATCH]]
            changed += int(await self._run("SET_SUB_STATUS", srv, status.to_text(), assoc, kinds, *rs))
        return changed

    async def iter_server_subscriptions(
        self, server: SMPServer, page_size: int = 900, kinds: Collection[SubStatusKind] | None = None
    ) -> AsyncIterator[list[SubscriptionRecord]]:
        """Pages of one SMP server's subscriptions (filtered by status kind), reading `_PAGE_BUCKETS`
        buckets at a time, so memory stays constant however many there are. A subscription created or
        deleted while paging may or may not be seen; every one present throughout is seen exactly once."""
        server = server.normalized()
        srv = await self._server_number(server, create=False)
        if srv is None:
            return
        page: list[SubscriptionRecord] = []
        for start in range(0, self._k.buckets, _PAGE_BUCKETS):
            with self._health.guard():
                async with self._r.pipeline(transaction=False) as pipe:
                    for b in range(start, min(start + _PAGE_BUCKETS, self._k.buckets)):
                        pipe.hgetall(self._k.bucket(srv, b))
                    buckets = await pipe.execute()
            for h in buckets:
                for r, value in h.items():
                    rec = self._decode_sub(make_sub_id(self._a, r, srv), server, value)
                    if kinds is None or rec.status.kind in kinds:
                        page.append(rec)
            while len(page) >= page_size:
                yield page[:page_size]
                page = page[page_size:]
        if page:
            yield page

    # ------------------------------------------------------------------ notifications, stats

    async def add_last_notification(
        self, server: SMPServer, notifier_id: bytes, received_at_ms: int, nonce: bytes, enc_meta: bytes
    ) -> tuple[NtfOutcome, TokenRecord | None, list[LastNotification]]:
        """`NMSG` (spec §5.7), one: see `add_last_notifications`."""
        [result] = await self.add_last_notifications([NewNotification(server, notifier_id, received_at_ms, nonce,
                                                                      enc_meta)])
        return result.outcome, result.token, result.notifications

    async def add_last_notifications(self, items: Sequence[NewNotification]) -> list[StoredNotification]:
        """The NMSGs of one SMP block (spec §5.7), in order, in two round trips whatever their number: each
        is kept atomically as its subscription's last notification and its token's list trimmed to the
        newest 6; returned for each, oldest first, with the token to push to."""
        for item in items:
            if len(item.nonce) != NONCE_BYTES:
                raise StoreError("NMSG nonce must be 24 bytes")
        located = [await self._locate(item) for item in items]
        with self._health.guard():
            async with self._r.pipeline(transaction=False) as pipe:
                for item, where in zip(items, located, strict=True):
                    if where is not None:
                        srv, r, sid = where
                        value = f"{item.received_at_ms:013d}".encode() + item.nonce + item.enc_meta
                        args: list[str | int | bytes] = [self._k.prefix, self._k.buckets, srv, r, sid, value,
                                                         MAX_LAST_NTFS]
                        await self._scripts["ADD_LAST_NTF"](keys=[], args=args, client=pipe)  # queued
                replies = iter(await pipe.execute())
        stored = [await self._stored(next(replies)) if where is not None else _no_sub() for where in located]
        tokens = {t.token_id: t for t in await self._get_tokens(sorted({s.token_id for s in stored if s.token_id}))}
        return [StoredNotification(s.outcome, tokens.get(s.token_id), s.notifications)
                if s.outcome is NtfOutcome.STORED else s for s in stored]

    async def _locate(self, item: NewNotification) -> tuple[int, bytes, bytes] | None:
        server = item.server.normalized()
        srv = await self._server_number(server, create=False)
        if srv is None:
            return None
        r = self._r_of(server, item.notifier_id)
        return srv, r, make_sub_id(self._a, r, srv)

    async def _stored(self, res: Any) -> StoredNotification:
        if res[0] == b"NOSUB":
            return _no_sub()
        if res[0] == b"INACTIVE":
            return StoredNotification(NtfOutcome.TOKEN_NOT_ACTIVE, None, [])
        ntfs = []
        token_id = b""
        flat = res[1]
        for i in range(0, len(flat), 4):
            srv_i = await self._server_address(int(flat[i]))
            if srv_i is None:
                continue
            rec = self._decode_sub(flat[i + 3], srv_i, flat[i + 1])
            token_id = rec.token_id
            v = flat[i + 2]
            ntfs.append(LastNotification(srv_i, rec.notifier_id, int(v[:13]), v[13:37], v[37:]))
        return StoredNotification(NtfOutcome.STORED, None, ntfs, token_id)

    async def counts(self) -> StoreCounts:
        with self._health.guard():
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zcard(self._k.g("used"))
                pipe.get(self._k.g("n:sub"))
                pipe.get(self._k.g("n:ln"))
                pipe.hgetall(self._k.g("srv:count"))
                tokens, subs, lns, per_server = await pipe.execute()
        servers = sum(1 for c in per_server.values() if int(c) > 0)
        return StoreCounts(int(tokens), int(subs or 0), int(lns or 0), servers)


def _conforms(store: RedisStore) -> Store:
    """mypy checks here that RedisStore implements the Store protocol."""
    return store
