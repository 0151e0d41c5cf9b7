"""Notices in Redis: a batch of `NMSG`s stored and decided in one script (§5.7, README "Push policy").

Theory of operation. The push pipeline (push/pipeline.py) hands ``notify`` every notice that arrived since
its last call (one SMP block, or under load the blocks of many servers: group commit), and one script
(``NOTIFY``, in notice_scripts.py) does for each, in order and atomically:

1. find its subscription (``NOSUB``: counted, not pushed) and check that its token is ACTIVE;
2. keep it as its subscription's last notification, trim the token's list to the newest 6;
3. decide the push against the token's hidden-push budget (the GCRA of push/policy.py, store/budget.py) and
   the policy in effect: hidden, alert, deferred (the token's pending push, due when the budget returns) or
   dropped. The caller passes the budgets of the policy document it last read and that document; if the
   stored one differs, nothing is written and the script answers the stored one (``PolicyChanged``: the
   caller parses it and calls again), so a change made on any instance is used by the very next batch;
4. for a push to send now, write its outbox entry (store/outbox.py), due one lease later;
5. answer the push's notices: this one, last, after up to 5 newer or other ones of its token — fixed here,
   when the notice is handled, so the push always carries it, however many notices follow before it is sent.

The token records of the batch come once each, packed. Decryption (the token's sealed fields, each
subscription's notifier id) is cached by ciphertext, which never changes meaning: a token or subscription seen
before costs no AES (most notices are of subscriptions seen a moment ago).

``claim_deferred`` (a deferred push falling due) and ``for_retry`` (a push sent again from the outbox) read a
token and its newest notifications the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from ntf_server.policy_types import Budget, Decision
from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.codec import TokenCodec, decode_ln, encode_ln, unpack_hash
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import decode_sub, make_sub_id, parse_sub_id, sub_r
from ntf_server.store.notice_scripts import Located, NoticeScripts
from ntf_server.store.outbox import Cause, first_ms
from ntf_server.store.records import Notice, PushProvider, TokenRecord
from ntf_server.store.servers import ServerRegistry

# Decoded records kept per cache, oldest evicted first: a notice's own records are decoded once and reused by
# the up to 6 pushes that carry it. Bounded so the caches stay in the tens of MB in all (a token record's key
# is its packed hash, ~1 KB: fewer of those); tests/bench/soak.py saw RSS grow while 65,536 each filled.
CACHE_SIZE: Final = 16384
TOKEN_CACHE_SIZE: Final = 4096
@dataclass(frozen=True, slots=True)
class PolicyChanged:
    raw: bytes | None  # the stored policy document (None: none)


@dataclass(frozen=True, slots=True)
class Decided:
    """What became of one notice. ``decision`` None: not pushed (``token`` None too) because its subscription
    is unknown (``known`` False) or its token is not ACTIVE."""

    decision: Decision | None
    token: TokenRecord | None = None
    notices: tuple[Notice, ...] = field(default=(), repr=False)  # the push's, oldest first, the cause last
    push_id: int = 0  # the outbox entry of a push to send now
    due: float | None = None  # DEFER: when the token's pending push is due
    known: bool = True


@dataclass(frozen=True, slots=True)
class Claimed:
    token: TokenRecord
    notices: tuple[Notice, ...]
    version: str


@dataclass(frozen=True, slots=True)
class ForRetry:
    token: TokenRecord | None  # None: deleted
    notices: tuple[Notice, ...]  # the token's newest, oldest first
    cause: Notice | None  # None: none, or its subscription was deleted


K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """A bounded map, oldest entries evicted first (decrypted records, keyed by their ciphertext)."""

    __slots__ = ("_d", "_max")

    def __init__(self, max_items: int = CACHE_SIZE) -> None:
        self._d: dict[K, V] = {}
        self._max = max_items

    def get(self, k: K) -> V | None:
        return self._d.get(k)

    def put(self, k: K, v: V) -> V:
        if len(self._d) >= self._max:
            del self._d[next(iter(self._d))]
        self._d[k] = v
        return v


class RedisNotices:
    def __init__(self, data: DataSet, servers: ServerRegistry, codec: TokenCodec) -> None:
        self._d = data
        self._servers = servers
        self._codec = codec
        self._lua = NoticeScripts(data)
        self._where: _Cache[tuple[SMPServer, bytes], tuple[int, bytes, bytes]] = _Cache()
        self._tokens: _Cache[bytes, TokenRecord] = _Cache(TOKEN_CACHE_SIZE)
        self._nids: _Cache[bytes, bytes] = _Cache()
        self._seen: _Cache[bytes, Notice] = _Cache()  # a notice is in the list of up to 6 pushes

    def __repr__(self) -> str:
        return f"<RedisNotices prefix={self._d.keys.prefix!r}>"

    async def notify(self, batch: Sequence[Notice], budgets: Mapping[PushProvider, Budget], now: float,
                     policy: tuple[str, bytes | None] | None, lease_s: float,
                     sent_at: float | None = None) -> list[Decided] | PolicyChanged:
        """Store and decide every notice of ``batch`` in one round trip (module docstring). ``now``: the budget's
        clock; ``budgets``: per provider, from the policy document ``policy[1]`` (stored under key ``policy[0]``;
        None: do not check). Pushes to send go to the outbox as first tried at ``sent_at`` (default ``now``),
        due again ``lease_s`` later; ``lease_s`` 0: no outbox entries (the caller does not send)."""
        at = now if sent_at is None else sent_at
        located = []
        for n in batch:
            where = await self._locate(n)  # None: its server was never registered, no subscription can exist
            value = encode_ln(n.received_at_ms, n.nonce, n.enc_meta) if where is not None else b""
            located.append(Located(*(where or (0, b"", b"")), value))
        res: Any = await self._lua.notify(located, budgets, now, first_ms(at), at + lease_s if lease_s > 0 else None,
                                          policy)
        if res[0] == b"POLICY":
            return PolicyChanged(bytes(res[1]) or None)
        flat = res[2]
        tokens = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        return [await self._decided(r, tokens) for r in res[1]]

    async def _locate(self, n: Notice) -> tuple[int, bytes, bytes] | None:
        """Server number, r and sub id of the notice's subscription; None if its server is unknown."""
        key = (n.server, n.notifier_id)
        if (hit := self._where.get(key)) is not None:
            return hit
        server = n.server.normalized()
        srv = await self._servers.number(server, create=False)
        if srv is None:
            return None
        r = sub_r(self._d.a, server, n.notifier_id)
        return self._where.put(key, (srv, r, make_sub_id(self._d.a, r, srv)))

    async def _decided(self, r: Any, tokens: Mapping[bytes, bytes]) -> Decided:
        if r == b"N":
            return Decided(None, known=False)
        if r == b"I":
            return Decided(None)
        decision = Decision(r[0].decode())
        tok = self._token(r[1], tokens[r[1]])
        return Decided(decision, tok, await self._notices(r, 4), int(r[2]), float(r[3]) if r[3] else None)

    def _token(self, tid: bytes, packed: bytes) -> TokenRecord:
        if (hit := self._tokens.get(packed)) is not None and hit.token_id == tid:
            return hit
        return self._tokens.put(packed, self._codec.decode(tid, unpack_hash(packed)))

    async def _notices(self, flat: Sequence[bytes], start: int) -> tuple[Notice, ...]:
        """(server number, record, value, sub id) x n from ``start``, decoded."""
        out = []
        for i in range(start, len(flat), 4):
            value = flat[i + 2]
            key = flat[i + 3] + value  # sub id ‖ ts ‖ the SMP server's nonce ‖ metadata: one notice
            if (known := self._seen.get(key)) is not None:
                out.append(known)
                continue
            srv = int(flat[i])
            server = self._servers.cached(srv) or await self._servers.address(srv)
            if server is None:
                continue
            nid = self._notifier_id(flat[i + 3], server, flat[i + 1])
            out.append(self._seen.put(key, decode_ln(server, nid, value)))
        return tuple(out)

    def _notifier_id(self, sid: bytes, server: SMPServer, record: bytes) -> bytes:
        if (hit := self._nids.get(record)) is not None:
            return hit
        return self._nids.put(record, decode_sub(self._d.a, sid, server, record).notifier_id)

    async def claim_deferred(self, tid: bytes, b: Budget, now: float, lease_s: float) -> Claimed | float | None:
        """Take the token's due pending push (policy.claim): its token and newest notifications, else the
        time to look again, else None (not due any more: another instance has it; or it is gone)."""
        res: Any = await self._lua.claim(tid, b, now, lease_s)
        match res[0]:
            case b"SEND":
                tok = self._token(tid, res[2])
                return Claimed(tok, await self._notices(res, 3), res[1].decode())
            case b"LATER":
                return float(res[1])
        return None

    async def for_retry(self, tid: bytes, cause: Cause | None) -> ForRetry:
        """A push sent again from the outbox: its token now, its newest notifications and its cause."""
        sid, srv = (cause.sub_id, parse_sub_id(self._d.a, cause.sub_id)[1]) if cause else (b"", 0)
        res: Any = await self._lua.for_retry(tid, sid, srv)
        if not res[0]:
            return ForRetry(None, (), None)
        tok = self._token(tid, res[0])
        notices = await self._notices(res, 2)
        first = None
        if cause is not None and res[1] and (server := await self._servers.address(srv)) is not None:
            try:
                first = decode_ln(server, self._notifier_id(cause.sub_id, server, res[1]), cause.value)
            except StoreError:
                first = None
        return ForRetry(tok, notices, first)
