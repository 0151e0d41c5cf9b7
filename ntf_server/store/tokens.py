"""Tokens: registration, verification lookups, status, periodic-push schedule, expiry (§4.3–4.5, §5.10).

Keys (keys.py; the record layout is codec.py): per token `P t{T}` (the record); `P dt:<x>` (hash: token id
-> HMAC(verify key), the tokens of one (provider, device token)); the zsets `P used` (by last-used day:
expiry, the token count, stand-in choice), `P cron` (by next periodic push) and `P unv` (by creation time,
while never verified). Deleting a token cascades to its subscriptions and last notifications inside the
same script (scripts.py `del_token`), which answers what it removed for the subscriber to forget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from typing import Final

from ntf_server.store.base import RemovedSub, TokenCreate, TokenReplace
from ntf_server.store.codec import TokenCodec, unpack_hash
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import TOKEN_ID_BYTES
from ntf_server.store.records import (
    CONFIRM_KEEPS,
    DAY_S,
    TOKEN_ACTIVE,
    VERIFY_ALLOWED,
    PushProvider,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
    day_of,
)
from ntf_server.store.servers import ServerRegistry
from ntf_server.store.token_scripts import TokenScripts

_REPLACED: Final = {b"OK": TokenReplace.REPLACED, b"DUPLICATE": TokenReplace.DUPLICATE, b"QUOTA": TokenReplace.QUOTA}


class RedisTokens:
    def __init__(self, data: DataSet, servers: ServerRegistry) -> None:
        self._d = data
        self._servers = servers
        self.codec = TokenCodec(data.a)
        self._lua = TokenScripts(data)

    def __repr__(self) -> str:
        return f"<RedisTokens prefix={self._d.keys.prefix!r}>"

    async def create_token(self, token: TokenRecord, now: float | None = None,
                           max_per_device: int = 0) -> TokenCreate:
        """``now`` is the creation time (default: the wall clock); until the token is verified it is also
        in the `unv` index that ``expire_unverified`` walks. ``max_per_device`` (0 = no cap): QUOTA when the
        device token already has that many registrations."""
        if len(token.token_id) != TOKEN_ID_BYTES:
            raise StoreError("token id must be 24 bytes")
        fields = self.codec.encode(token)
        x = self.codec.dt_index(token.provider, token.device_token)
        vh = self.codec.vk_index(token.verify_key)
        created = math.floor(time.time() if now is None else now)
        res = await self._lua.create(token.token_id, x, vh, token.last_used_day, created, max_per_device, fields)
        if res in (b"OK", b"SAME"):  # SAME: a retried call whose first reply was lost
            return TokenCreate.CREATED
        if res == b"DUPLICATE":
            return TokenCreate.DUPLICATE
        if res == b"QUOTA":
            return TokenCreate.QUOTA
        raise StoreError("token id collision")

    async def get_token(self, token_id: bytes) -> TokenRecord | None:
        """One round trip and four decryptions whether or not the token exists (see scripts.py `LOOKUP`)."""
        found, packed, tid = await self._lua.lookup(token_id, self.codec.pick(token_id))
        return self.codec.found_or_standin(found, packed, tid)

    async def get_tokens(self, tids: Sequence[bytes]) -> list[TokenRecord]:
        """The tokens of `tids` that exist, in one round trip."""
        async with self._d.pipeline() as pipe:
            for tid in tids:
                pipe.hgetall(self._d.keys.token(tid))
            hashes = await pipe.execute()
        return [self.codec.decode(tid, h) for tid, h in zip(tids, hashes, strict=True) if h]

    async def find_token(self, provider: PushProvider, device_token: bytes, verify_key: bytes) -> TokenRecord | None:
        """The token of a repeat `TNEW` (§4.3): same provider, device token and verify key. One index
        read and one record, however many registrations the device token has."""
        field = self._repeat_field(self.codec.dt_index(provider, device_token), self.codec.vk_index(verify_key))
        found, packed, tid = await self._lua.lookup_tnew(field)
        if not found:
            return None
        t = self.codec.decode(tid, unpack_hash(packed))
        same = t.provider is provider and t.device_token == device_token and t.verify_key == verify_key
        return t if same else None

    async def device_registrations(self, provider: PushProvider, device_token: bytes) -> int:
        """How many registrations the device token has here (a sharded store adds those of its other shards
        to a TNEW's cap: store/sharded.py)."""
        return int(await self._d.call(self._d.r.hlen, self._d.keys.dt_index(self.codec.dt_index(provider,
                                                                                              device_token))))

    async def is_registered(self, provider: PushProvider, device_token: bytes, verify_key: bytes) -> bool:
        """Whether a registration of (provider, device token, verify key) is here: one HEXISTS (a sharded
        store's TNEW asks its other shards so, store/sharded.py)."""
        field = self._repeat_field(self.codec.dt_index(provider, device_token), self.codec.vk_index(verify_key))
        return bool(await self._d.call(self._d.r.hexists, self._d.keys.g("tv"), field))

    async def delete_device(self, provider: PushProvider, device_token: bytes) -> list[RemovedSub]:
        """Delete every registration of the device token here, with their subscriptions (a sharded store's
        TVFY, in the shards other than the verified token's)."""
        tids = await self._d.call(self._d.r.hkeys, self._d.keys.dt_index(self.codec.dt_index(provider, device_token)))
        removed: list[RemovedSub] = []
        for tid in tids:
            removed += (await self.delete_token(bytes(tid)))[1]
        return removed

    @staticmethod
    def _repeat_field(x: str | bytes, vh: bytes) -> bytes:
        """The `P tv` field of a registration (as scripts.py writes it: x ‖ ':' ‖ vh)."""
        return (x.encode() if isinstance(x, str) else x) + b":" + vh

    async def index_repeats(self, batch: int = 1000) -> int:
        """Once per data set: fill `P tv` from the `dt:` indexes of a data set written before it existed
        (marked done by the field `tv` of `P meta`). Returns how many registrations were indexed."""
        r, keys = self._d.r, self._d.keys
        if await self._d.call(r.hexists, keys.g("meta"), "tv"):
            return 0
        n = 0
        if await self._d.call(r.zcard, keys.g("used")):  # an empty data set has nothing to index
            start = len(keys.dt_index(""))
            async for key in r.scan_iter(match=keys.dt_index("*"), count=batch):
                pairs = await self._d.call(r.hgetall, key)
                if pairs:
                    fields = {self._repeat_field(key[start:], vh): tid for tid, vh in pairs.items()}
                    await self._d.call(r.hset, keys.g("tv"), None, None, fields)
                    n += len(fields)
        await self._d.call(r.hset, keys.g("meta"), "tv", 1)
        return n

    async def replace_token(
        self, token_id: bytes, provider: PushProvider, device_token: bytes, reg_code: bytes, max_per_device: int = 0
    ) -> TokenReplace:
        """`TRPL` (§4.4): new provider/device token/code, status REGISTERED, DH keys kept. Refused when
        the token is gone, the new device token is already registered with this verify key, or (moving to
        another device token) that one has ``max_per_device`` registrations (0 = no cap)."""
        fields = self.codec.replacement(token_id, provider, device_token, reg_code)
        x = self.codec.dt_index(provider, device_token)
        res = await self._lua.replace(token_id, x, max_per_device, fields)
        return _REPLACED.get(res, TokenReplace.NO_TOKEN)

    async def set_token_status(
        self, token_id: bytes, status: TokenStatus, only_from: Collection[TokenStatusKind] | None = None
    ) -> TokenStatus | None:
        """Set the status (only if the current kind is in `only_from`, when given); returns the status
        the token has afterwards, None if there is no such token."""
        text = status.to_text()
        sm = self.codec.status_mac(token_id, text)
        if only_from is None:
            res = await self._lua.set_status(token_id, text, sm, only=False, kinds=())
        else:
            kinds = [k.value for k in only_from]
            res = await self._lua.set_status(token_id, text, sm, only=True, kinds=kinds)
        return TokenStatus.from_text(res[1].decode()) if res else None

    async def confirm_token(self, token_id: bytes) -> TokenStatus | None:
        """Verification push accepted: CONFIRMED unless already CONFIRMED/ACTIVE (§4.5)."""
        kinds = [k.value for k in CONFIRM_KEEPS]
        confirmed = TokenStatusKind.CONFIRMED.value
        res = await self._lua.set_status(token_id, confirmed, self.codec.status_mac(token_id, confirmed), only=False,
                                         kinds=kinds)
        return TokenStatus.from_text(res[1].decode()) if res else None

    async def activate_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        """`TVFY` accepted: ACTIVE (only from REGISTERED/CONFIRMED/ACTIVE) and, in the same step, delete
        every other registration of the same device token with its subscriptions (§4.4)."""
        sm = self.codec.status_mac(token_id, TokenStatusKind.ACTIVE.value)
        res = await self._lua.activate(token_id, sm, (k.value for k in VERIFY_ALLOWED))
        return res[0] == b"OK", await self._servers.removed(res[1])

    async def delete_token(self, token_id: bytes) -> tuple[bool, list[RemovedSub]]:
        res = await self._lua.delete(token_id)
        return bool(res[0]), await self._servers.removed(res[1])

    async def touch_token(self, token_id: bytes, now: float) -> None:
        """Record that the token was used today (§4.3); drives expiry of abandoned tokens."""
        await self._lua.touch(token_id, day_of(now))

    async def set_cron_interval(self, token_id: bytes, minutes: int, now: float) -> bool:
        """`TCRN`: 0 turns periodic pushes off. The first one is due one interval from now — the Haskell
        server never sends it because `cron_sent_at` stays NULL (§5.10); we do."""
        if minutes < 0:
            raise ValueError("cron interval must be >= 0")
        return bool(await self._lua.set_cron(token_id, minutes, math.floor(now) + 60 * minutes))

    async def mark_cron_sent(self, token_id: bytes, now: float) -> bool:
        return bool(await self._lua.cron_sent(token_id, math.floor(now)))

    async def tokens_due_for_cron(self, now: float, limit: int = 1000) -> list[TokenRecord]:
        """ACTIVE tokens whose periodic push is due (§5.10); non-active ones are skipped, not lost."""
        due: list[TokenRecord] = []
        offset = 0
        while len(due) < limit:
            tids = await self._d.call(self._d.r.zrangebyscore, self._d.keys.g("cron"), "-inf", now, offset, limit)
            if not tids:
                break
            offset += len(tids)
            due += [t for t in await self.get_tokens(tids) if t.status == TOKEN_ACTIVE]
        return due[:limit]

    async def expire_tokens(
        self, now: float, unused_days: int, batch: int = 100
    ) -> tuple[list[bytes], list[RemovedSub]]:
        """Delete tokens not used for `unused_days` days, with their subscriptions (the Haskell server
        never expires anything, §6.3). Each batch is one atomic script."""
        cutoff = day_of(now) - unused_days * DAY_S
        tids: list[bytes] = []
        removed: list[RemovedSub] = []
        while True:
            res = await self._lua.expire(cutoff, batch)
            tids += res[0]
            removed += await self._servers.removed(res[1])
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
            scanned, gone, flat = await self._lua.expire_unverified(cutoff, batch)
            tids += gone
            removed += await self._servers.removed(flat)
            if scanned < batch:
                return tids, removed
