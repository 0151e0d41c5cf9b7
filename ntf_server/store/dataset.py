"""The data set as a whole: the connection every entity store shares, and what belongs to no one entity —
the metadata (`P meta`), the stand-in records (`P dummy:t`, `P dummy`), the figures (`counts`) and advice
on the Redis configuration.

Every Redis call of every store module (the entity stores tokens.py, servers.py, subscriptions.py,
notices.py..., and those that keep their own keys: policy.py, budget.py, activity.py, census.py,
census_shared.py, sub_aliases.py, vrfcap.py) goes through `DataSet.script` (a Lua script, called through
its module's typed wrapper: token_scripts.py, sub_scripts.py...), `keyed_script` (a script that names its
own keys), `call` (one command), `pipeline` (reads in one round trip) or `guard` (a few calls at once), so
each passes the health switch (store/health.py): it fails fast while Redis is away, and its errors are
translated in one place. No module outside the store sees a redis-py exception.

`P meta` holds `buckets` (subscription buckets per SMP server, fixed when the data set is created) and
`keycheck` (a keyed hash telling whether the configured store key is the one the data set was written
with). `keys` is replaced once, at connect, when the data set uses another bucket count than asked for
by default; the entity stores read it through this object, so all of them see the change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

from redis import exceptions as rex

from ntf_server.protocol.encoding import enc_smp_server
from ntf_server.store.atrest import AtRest
from ntf_server.store.base import StoreCounts
from ntf_server.store.client import AnyPipeline, Client
from ntf_server.store.codec import DUMMY_NOTIFIER, DUMMY_SERVER, DUMMY_SUB_ID, DUMMY_TOKEN, DUMMY_TOKEN_ID, TokenCodec
from ntf_server.store.errors import StoreError
from ntf_server.store.health import StoreHealth
from ntf_server.store.keys import HASH_MAX_LISTPACK_VALUE, R_BYTES, Keys, PackedSub, pack_sub, seal_notifier
from ntf_server.store.records import TOKEN_ACTIVE


def _text(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


class DataSet:
    def __init__(self, client: Client, atrest: AtRest, keys: Keys) -> None:
        self.r = client
        self.a = atrest
        self.keys = keys
        self.health = StoreHealth()

    def __repr__(self) -> str:
        return f"<DataSet prefix={self.keys.prefix!r} buckets={self.keys.buckets} {self.health!r}>"

    # ------------------------------------------------------------------ calls

    def _argv(self, args: tuple[Any, ...]) -> list[Any]:
        return [self.keys.prefix, self.keys.buckets, *args]  # every script starts so (scripts.py)

    def script(self, source: str) -> Callable[..., Awaitable[Any]]:
        """A Lua script kept beside the module that decodes its answer (its ARGV starts with P NB, as those
        of scripts.py do); each call runs it atomically through the health switch."""
        registered = self.r.register_script(source)

        async def run(*args: Any) -> Any:
            with self.health.guard():
                return await registered(keys=[self.keys.route], args=self._argv(args))

        return run

    def keyed_script(self, source: str) -> Callable[[list[str], list[Any]], Awaitable[Any]]:
        """A Lua script that names its own KEYS and ARGV (budget.py, vrfcap.py, census.py...: written before
        the P NB convention); each call runs through the health switch. In cluster mode its keys must carry
        the data set's prefix, so they share its hash slot (store/client.py)."""
        registered = self.r.register_script(source)

        async def run(keys: list[str], args: list[Any]) -> Any:
            with self.health.guard():
                return await registered(keys=keys, args=args)

        return run

    def guard(self) -> AbstractContextManager[None]:
        """The health switch around a few calls made at once (asyncio.gather, or a command and its follow-up)."""
        return self.health.guard()

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """One command. redis-py types replies as unions of bytes/str; this store always uses bytes replies."""
        with self.health.guard():
            return await fn(*args)

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[AnyPipeline]:
        """A non-transactional pipeline: one round trip (atomicity, where needed, is the scripts')."""
        with self.health.guard():
            async with self.r.pipeline(transaction=False) as pipe:
                yield pipe

    # ------------------------------------------------------------------ the data set

    async def check_meta(self, requested_buckets: int | None) -> None:
        """Adopt the data set's bucket count; refuse another explicit one or another store key."""
        check = self.a.index(b"store key check").hex()
        meta = self.keys.g("meta")
        with self.health.guard():
            await self.r.hsetnx(meta, "buckets", self.keys.buckets)
            await self.r.hsetnx(meta, "keycheck", check)
            vals: Any = await self.r.hmget(meta, ["buckets", "keycheck"])
        buckets, stored_check = vals
        if requested_buckets is not None and int(buckets) != requested_buckets:
            raise StoreError(f"data set uses {int(buckets)} buckets per server, configured {requested_buckets}")
        self.keys = Keys(self.keys.prefix, int(buckets))
        if stored_check.decode() != check:
            raise StoreError("the store key does not match the one this data set was written with")

    async def refuse_untagged(self, plain_prefix: str) -> None:
        """Cluster mode (store/client.py): refuse a cluster that holds a data set of this prefix written
        without the hash tag (README "Cluster mode": such a data set is not moved)."""
        with self.health.guard():
            untagged = await self.r.exists(plain_prefix + "meta") and not await self.r.exists(self.keys.route)
        if untagged:
            raise StoreError(f"this cluster holds a data set written without cluster mode ({plain_prefix}meta); "
                             f"cluster mode keeps its keys under {self.keys.prefix} and does not move old ones "
                             "(README \"Cluster mode\")")

    async def write_dummies(self) -> None:
        """Store the stand-in records once per data set (HSETNX: concurrent instances agree, and a field
        written by either decrypts, as both use the same store key)."""
        token = TokenCodec(self.a).encode(DUMMY_TOKEN)
        sealed = seal_notifier(self.a, DUMMY_SUB_ID[:R_BYTES], DUMMY_TOKEN_ID, *DUMMY_NOTIFIER)
        sub = pack_sub(PackedSub(DUMMY_TOKEN_ID, False, TOKEN_ACTIVE.to_text(), sealed))
        async with self.pipeline() as pipe:
            for i in range(0, len(token), 2):
                pipe.hsetnx(self.keys.g("dummy:t"), str(token[i]), token[i + 1])
            pipe.hsetnx(self.keys.g("dummy"), "sub", sub)
            pipe.hsetnx(self.keys.g("dummy"), "addr", enc_smp_server(DUMMY_SERVER))
            await pipe.execute()

    async def counts(self) -> StoreCounts:
        async with self.pipeline() as pipe:
            pipe.zcard(self.keys.g("used"))
            pipe.get(self.keys.g("n:sub"))
            pipe.get(self.keys.g("n:ln"))
            pipe.hgetall(self.keys.g("srv:count"))
            tokens, subs, lns, per_server = await pipe.execute()
        servers = sum(1 for c in per_server.values() if int(c) > 0)
        return StoreCounts(int(tokens), int(subs or 0), int(lns or 0), servers)

    async def config_advice(self) -> list[str]:
        """Redis settings that would cost memory or durability with this schema (for a start-up log);
        empty when all is well or when CONFIG is not available (managed Redis)."""
        try:
            cfg: Any = await self.r.config_get("*")
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
