"""Where a sharded data set keeps what (README "Cluster mode"; `[redis] shards`).

A data set of N shards is N complete data sets of the one-slot layout (keys.py), each under its own key
prefix; in cluster mode each prefix is its own hash tag, so each shard is one hash slot, and the N slots are
spread evenly over the 16,384 (`shard_prefixes`), so over the primaries. Every Lua script still runs in one
shard, so in one slot: nothing of the one-slot layout's atomicity is lost *within* a shard.

Placement:
- a token, with everything of it (its record, subscriptions list, last notifications, budget, pending
  push, periodic schedule, outbox entries), lives in shard ``shard_of(token id)``. TNEW makes the id with
  `token_id_in`: random, but in the shard of its device token (of the keyed hash of provider and device
  token), so all registrations of one device are in one shard: a repeat TNEW, the per-device cap, TVFY
  deleting the other registrations and the device's one hidden-push budget are each one script, as on one
  shard. Devices hash evenly, so tokens spread evenly. (A token keeps its shard when TRPL gives it another
  device token, and imported tokens keep their ids: those are the cases store/sharded.py's reads of the
  other shards are for);
- a subscription lives in its token's shard (in that shard's bucket of its SMP server), so NOTIFY, the
  cascades of TDEL and expiry, and the caps of SNEW stay one script;
- what belongs to no token lives in shard 0, the *home*: the leases, the jobs' leases, the policy
  document, the census, the activity counts, the verification caps, the service credentials and ids.

What is found by something other than a token id (a notice's (SMP server, notifier id); a subscription id;
a TNEW's (device token, verify key)) is asked of every shard at once, and the one that has it answers
(store/sharded.py). SMP-server numbers are each shard's own (a shard registers a server when it first
stores one of its subscriptions); a subscription id carries its shard's number, which in other shards names
another server or none, so only its own shard finds it.

Pure functions, but for `check_shards` (one read and write of `P meta`).
"""

from __future__ import annotations

import math
import secrets
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ntf_server.store.client import cluster_prefix
from ntf_server.store.dataset import DataSet
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import DEFAULT_BUCKETS, TOKEN_ID_BYTES

MAX_SHARDS: Final = 256
MIN_SHARD_BUCKETS: Final = 128


def default_buckets(shards: int) -> int:
    """Buckets per SMP server of a new data set, in each shard: a shard holds 1/N of a server's subscriptions,
    so N times fewer buckets keep as many in each (and a resubscription page as many per round trip)."""
    return max(DEFAULT_BUCKETS // shards, min(MIN_SHARD_BUCKETS, DEFAULT_BUCKETS))


def shard_of(token_id: bytes, shards: int) -> int:
    """The shard of a token (its first four bytes, uniform: token ids are random)."""
    return int.from_bytes(token_id[:4], "big") % shards


def token_id_in(device_index: str, shards: int) -> bytes:
    """A random token id whose shard is the device token's (``device_index``: its keyed hash, hex): random
    bytes, their first four moved to the nearest value in that shard."""
    want = int(device_index[:8], 16) % shards
    tid = bytearray(secrets.token_bytes(TOKEN_ID_BYTES))
    head = int.from_bytes(tid[:4], "big")
    head += (want - head) % shards
    if head >= 1 << 32:
        head -= shards
    tid[:4] = head.to_bytes(4, "big")
    return bytes(tid)


def slot_of(prefix: str) -> int:
    """The cluster hash slot of every key under ``prefix`` (a hash tag)."""
    return int(key_slot(prefix.encode()))


def shard_prefixes(prefix: str, shards: int, *, cluster: bool) -> list[str]:
    """Key prefixes of the N shards. Shard 0's is the data set's own (``ntf:``, or ``{ntf:}`` in cluster
    mode): a one-shard data set is exactly the one-slot layout. On one Redis shard k is ``ntf:k:``. In a
    cluster the 16,384 slots are cut into N equal segments; shard 0's slot is in one of them, and every other
    shard gets a hash tag ``{ntf:k.j}`` (the first j that fits) whose slot is in the middle half of one of the
    other segments, so each segment holds one shard: a cluster whose primaries split the slots evenly (as
    ``valkey-cli --cluster create`` does) into N, or a divisor of N, ranges gets N/primaries shards on each."""
    if not 1 <= shards <= MAX_SHARDS:
        raise StoreError(f"shards must be 1..{MAX_SHARDS}")
    if not cluster:
        return [prefix] + [f"{prefix}{k}:" for k in range(1, shards)]
    home = cluster_prefix(prefix)
    inner = home[1:-1]
    width = REDIS_CLUSTER_HASH_SLOTS / shards
    home_segment = min(int(slot_of(home) // width), shards - 1)
    out = [home]
    for k, segment in enumerate((s for s in range(shards) if s != home_segment), start=1):
        lo, span = math.ceil(segment * width + width / 4), max(int(width / 2), 1)
        for j in range(1_000_000):
            cand = "{" + f"{inner}{k}.{j}" + "}"
            if 0 <= slot_of(cand) - lo < span:
                out.append(cand)
                break
        else:  # pragma: no cover - CRC16 reaches every window long before
            raise StoreError("no hash tag found for a shard")
    return out


async def check_shards(home: DataSet, shards: int) -> None:
    """Record the shard count in the home shard's `P meta` when the data set is new; refuse another. A data set
    written before shards existed has one (it has a `keycheck` and no `shards`)."""
    meta = home.keys.g("meta")
    with home.guard():
        keycheck, stored = await home.r.hmget(meta, ["keycheck", "shards"])
        if stored is None and keycheck is None:
            await home.r.hsetnx(meta, "shards", shards)
            stored = await home.r.hget(meta, "shards")
    have = int(stored) if stored is not None else 1
    if have != shards:
        raise StoreError(f"the data set has {have} shard{'s' if have != 1 else ''}, configured {shards} (fixed when "
                         "the data set is created; README \"Cluster mode\")")
