"""The SMP-server registry: every SMP server a subscription names gets a small number, for good.

Keys (keys.py): `P srv:id` (hash: HMAC(encoded server) -> number), `P srv:addr` (hash: number -> encoded
server), `P srv:n` (the last number given), `P srv:count` (hash: number -> subscriptions on it; written by
the subscription scripts, read here). Subscription records and ids carry the number, not the address
(keys.py), so a server's address is stored once and its index name reveals nothing.

Numbers never change once given, so both directions are cached in the process without invalidation; two
instances registering one server at once agree (REGISTER_SERVER is one script).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ntf_server.protocol.encoding import CodecError, SMPServer, dec_smp_server, decode_all, enc_smp_server
from ntf_server.protocol.smp import queue_ids_hash
from ntf_server.store.base import RemovedSub
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import decode_sub
from ntf_server.store.sub_scripts import SubScripts


class ServerRegistry:
    def __init__(self, data: DataSet) -> None:
        self._d = data
        self._lua = SubScripts(data)
        self._num: dict[bytes, int] = {}  # encoded server -> number
        self._addr: dict[int, SMPServer] = {}

    def __repr__(self) -> str:
        return f"<ServerRegistry {len(self._addr)} cached>"

    def index(self, encoded: bytes) -> str:
        """The `srv:id` field of an encoded server."""
        return self._d.a.index(b"srv", encoded).hex()

    async def number(self, server: SMPServer, create: bool) -> int | None:
        """The number of a (normalized) server; with `create`, registering it if it has none."""
        enc = enc_smp_server(server)
        if (n := self._num.get(enc)) is not None:
            return n
        if create:
            n = int(await self._lua.register_server(self.index(enc), enc))
        else:
            raw = await self._d.call(self._d.r.hget, self._d.keys.g("srv:id"), self.index(enc))
            if raw is None:
                return None
            n = int(raw)
        self.learn(enc, server, n)
        return n

    async def address(self, n: int) -> SMPServer | None:
        if (s := self._addr.get(n)) is not None:
            return s
        raw = await self._d.call(self._d.r.hget, self._d.keys.g("srv:addr"), n)
        return self.remember(n, raw) if raw is not None else None

    def cached(self, n: int) -> SMPServer | None:
        return self._addr.get(n)

    def learn(self, encoded: bytes, server: SMPServer, n: int) -> None:
        """A number a script looked up (no round trip of our own); `encoded` is `enc_smp_server(server)`."""
        self._num[encoded] = n
        self._addr[n] = server

    def remember(self, n: int, addr: bytes) -> SMPServer:
        """An address a script read from `srv:addr`."""
        try:
            s = decode_all(addr, dec_smp_server)
        except CodecError as e:
            raise StoreError("corrupted SMP server registry") from e
        self.learn(enc_smp_server(s), s, n)
        return s

    async def servers_with_subscriptions(self) -> list[SMPServer]:
        """SMP servers with at least one subscription (resubscription at start, §3.3)."""
        return list(await self.subscription_counts())

    async def subscription_counts(self) -> dict[SMPServer, int]:
        """Subscriptions per SMP server, of those that have any, in server-number order."""
        counts = await self._d.call(self._d.r.hgetall, self._d.keys.g("srv:count"))
        out = {}
        for n, c in sorted(counts.items(), key=lambda kv: int(kv[0])):
            if int(c) > 0 and (server := await self.address(int(n))) is not None:
                out[server] = int(c)
        return out

    async def removed(self, flat: list[bytes]) -> list[RemovedSub]:
        """The subscriptions a cascade removed, as the scripts list them: sid, server number, record, ...
        Those tied to our service are untied (services.py)."""
        out, tied = [], defaultdict(list)
        for i in range(0, len(flat), 3):
            server = await self.address(int(flat[i + 1]))
            if server is not None:
                rec = decode_sub(self._d.a, flat[i], server, flat[i + 2])
                out.append(RemovedSub(rec.sub_id, server, rec.notifier_id))
                if rec.service_assoc:
                    tied[int(flat[i + 1])].append(rec.notifier_id)
        for srv, nids in tied.items():
            await self.untie_deleted(srv, nids)
        return out

    async def untie_deleted(self, srv: int, notifier_ids: Sequence[bytes]) -> None:
        """Deleted subscriptions of server ``srv`` that were tied to our service leave its count and IdsHash."""
        await self._lua.untie_deleted(srv, (queue_ids_hash([n]) for n in notifier_ids))
