"""Redis key layout and the packed subscription value (theory of operation for the schema).

Per token (all keys share the hash tag `{<token id hex>}`, so they live in one cluster slot):
  P t{T}        hash   p st vk dhp ci cs ud x vh + sealed dt dhk ds rc (layout: codec.py)
  P t{T}:subs   hash   sub id -> SMP server number            (token -> subscriptions, for cascades)
  P t{T}:ln     hash   sub id -> ts_ms(13 digits) ‖ nonce ‖ encMeta   (last notifications, ≤ 6; codec.py)
  P t{T}:srv    hash   SMP server number -> subscriptions      (the cap on servers per token)
Global:
  P dt:<hmac>   hash   token id -> hmac(verify key)            ((provider, device token) -> tokens)
  P tv          hash   <dt hmac>:<hmac(verify key)> -> token id (repeated TNEW in O(1))
  P used        zset   token id by last-used day               (expiry, token count)
  P cron        zset   token id by next periodic push time     (cron due set)
  P unv         zset   token id by creation time (Unix s), only while never verified (expiry of those)
  P srv:id / srv:addr / srv:n / srv:count                      (SMP server registry and sub counts)
  P n:sub, P n:ln      counters
  P s:<server number>:<bucket>   hash   r -> packed subscription (below)
  P dummy:t, P dummy            hash   stand-in token record; stand-in `sub` record and server `addr`,
                                       read where there is no record so lookups cost the same (STYLE 4)
  P meta         hash   buckets, keycheck (fixed when the data set is created; dataset.py), tv (P tv built)
  P sa           hash   imported subscription id -> ours       (only after import-simplex; sub_aliases.py)
  P vc:<hmac>    zset   verification pushes of one device in the last hour, expiring (vrfcap.py)
Which module reads and writes which keys: the table in redis.py.

Subscriptions are the bulk of the data (millions), so they have no per-subscription key and no separate
`(server, notifier id)` index: `r = HMAC(server, notifier id)[:20]` *is* the index. The subscription id
handed to clients is `r ‖ (server number XOR PRF(r))`: 24 bytes that look random to anyone without the
store key, from which the store recovers both the bucket and the field. Records of one SMP server are
spread over `buckets` small hashes (listpack-encoded by Redis while ≤ 128 entries, default config), which
keeps memory near the payload size and lets resubscription page one server's buckets in order.

Packed subscription value: token id(24) ‖ assoc('0'|'1') ‖ u8(len status) ‖ status text ‖ sealed, where
sealed = AES-GCM(u8(len nid) ‖ notifier id ‖ notifier key), associated data "sub" 0x00 ‖ r ‖ token id: the
record opens only under its own (server, notifier id) and token. Status and assoc are not authenticated
(the Lua scripts rewrite them in bulk; they decide what is resubscribed, not where anything goes). This module is the
one place of that layout in Python (`pack_sub`/`unpack_sub`, `seal_notifier`/`decode_sub`); the Lua
scripts in `scripts.py` read the same layout; keep both in step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from ntf_server.protocol.encoding import SMPServer, enc_smp_server
from ntf_server.store.atrest import AtRest
from ntf_server.store.errors import StoreError
from ntf_server.store.records import SubscriptionRecord, SubStatus

TOKEN_ID_BYTES: Final = 24
TIED_AT: Final = 24  # offset of the packed record's assoc byte ('1': tied to our SMP service)
SUB_ID_BYTES: Final = 24
R_BYTES: Final = 20
# Buckets per SMP server, fixed when the data set is created (stored in `P meta`). Redis keeps a hash
# listpack-encoded (compact) up to `hash-max-listpack-entries` (default 128) entries, so 1024 buckets stay
# compact up to ~130k subscriptions per SMP server; a deployment expecting more per server should create
# its data set with more buckets (or raise that Redis setting). Measured at 1M subscriptions over 50
# servers, see the report of bench/store_bench.py.
DEFAULT_BUCKETS: Final = 1024
# Redis setting this schema wants (embedded mode sets it; production redis.conf should): hash values up to
# this size keep a hash listpack-encoded. A packed subscription is ~130 bytes with Ed25519 keys.
HASH_MAX_LISTPACK_VALUE: Final = 256
MAX_BUCKETS: Final = 65536  # the bucket is taken from the first two bytes of r


def bucket_of(r: bytes, buckets: int) -> int:
    return (r[0] * 256 + r[1]) % buckets


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    buckets: int

    def token(self, tid: bytes) -> str:
        return f"{self.prefix}t{{{tid.hex()}}}"

    def token_subs(self, tid: bytes) -> str:
        return self.token(tid) + ":subs"

    def dt_index(self, x: str) -> str:
        return f"{self.prefix}dt:{x}"

    def bucket(self, srv: int, b: int) -> str:
        return f"{self.prefix}s:{srv}:{b}"

    def sub_bucket(self, srv: int, r: bytes) -> str:
        return self.bucket(srv, bucket_of(r, self.buckets))

    @property
    def route(self) -> str:
        """The key every script names in KEYS (`P meta`): in cluster mode it routes the call to the node of
        the data set's one slot (store/client.py); on one Redis it is merely declared."""
        return self.prefix + "meta"

    def g(self, name: str) -> str:
        """A global key: used, cron, unv, srv:id, srv:addr, srv:n, srv:count, n:sub, n:ln, meta."""
        return self.prefix + name


def make_sub_id(atrest: AtRest, r: bytes, srv: int) -> bytes:
    masked = srv ^ int.from_bytes(atrest.sid_mask(r), "big")
    return r + masked.to_bytes(4, "big")


def parse_sub_id(atrest: AtRest, sid: bytes) -> tuple[bytes, int]:
    """(r, server number) of a subscription id; garbage ids give a number that matches no server."""
    if len(sid) != SUB_ID_BYTES:
        raise StoreError("subscription id must be 24 bytes")
    r = sid[:R_BYTES]
    return r, int.from_bytes(sid[R_BYTES:], "big") ^ int.from_bytes(atrest.sid_mask(r), "big")


@dataclass(frozen=True, slots=True)
class PackedSub:
    token_id: bytes
    service_assoc: bool
    status: str
    sealed: bytes


def pack_sub(p: PackedSub) -> bytes:
    st = p.status.encode()
    if len(p.token_id) != TOKEN_ID_BYTES or len(st) > 255:
        raise StoreError("bad subscription record")
    return p.token_id + (b"1" if p.service_assoc else b"0") + bytes([len(st)]) + st + p.sealed


def unpack_sub(v: bytes) -> PackedSub:
    if len(v) < TOKEN_ID_BYTES + 2:
        raise StoreError("corrupted subscription record")
    n = v[TOKEN_ID_BYTES + 1]
    start = TOKEN_ID_BYTES + 2
    return PackedSub(v[:TOKEN_ID_BYTES], v[TIED_AT:TIED_AT + 1] == b"1", v[start : start + n].decode(), v[start + n :])


# Called twice per subscription while resubscribing (PENDING, then ACTIVE): the encoding of the same few
# servers was a tenth of the pool's CPU there (tests/bench/resubscribe.py). SMPServer is frozen, hashable.
_enc_server = functools.lru_cache(maxsize=4096)(enc_smp_server)


def sub_r(atrest: AtRest, server: SMPServer, notifier_id: bytes) -> bytes:
    """`r` of (server, notifier id): the field of its record, and the index of (server, notifier id)."""
    return atrest.index(b"sub", _enc_server(server), notifier_id, length=R_BYTES)


def sub_aad(r: bytes, token_id: bytes) -> bytes:
    """Associated data of a sealed notifier: binds it to its (server, notifier id) *and* its token, so a
    record moved to another token no longer opens (before, only to `r`: upgrade.py)."""
    return b"sub\x00" + r + token_id


def seal_notifier(atrest: AtRest, r: bytes, token_id: bytes, notifier_id: bytes, notifier_key: bytes) -> bytes:
    """The sealed part of a subscription value (notifier id of 1..255 bytes, checked by the caller)."""
    return atrest.seal(bytes([len(notifier_id)]) + notifier_id + notifier_key, sub_aad(r, token_id))


def open_sub(atrest: AtRest, r: bytes, value: bytes) -> tuple[PackedSub, bytes, bytes, SubStatus]:
    """(packed fields, notifier id, notifier key, status) of the subscription stored at field `r`."""
    p = unpack_sub(value)
    plain = atrest.open(p.sealed, sub_aad(r, p.token_id))
    n = plain[0]
    try:
        status = SubStatus.from_text(p.status)
    except ValueError as e:
        raise StoreError("corrupted subscription status") from e
    return p, plain[1 : 1 + n], plain[1 + n :], status


def decode_sub(atrest: AtRest, sid: bytes, server: SMPServer, value: bytes) -> SubscriptionRecord:
    """The record of subscription `sid` (on `server`) from its packed value, decrypting the notifier."""
    p, nid, key, status = open_sub(atrest, sid[:R_BYTES], value)
    return SubscriptionRecord(sid, p.token_id, server, nid, key, status, p.service_assoc)
