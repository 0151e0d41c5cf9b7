"""The latest census, shared: taken by the one instance holding the census lease (ntf_server/jobs.py), read
by every other instance on the data set, so each one's admin API shows the same figures.

Keys (``P`` = key prefix): ``P census`` string, the census as JSON (counts only: statuses, and per SMP server
its address as ``enc_smp_server`` in base64url; no token, id or key). It is written only by the holder of
``P lj:census`` with its fencing token (a holder that lost its lease cannot overwrite its successor's).
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Final

from ntf_server.protocol.encoding import (
    CodecError,
    b64u_decode,
    b64u_encode,
    dec_smp_server,
    decode_all,
    enc_smp_server,
)
from ntf_server.store.census import Census
from ntf_server.store.dataset import DataSet
from ntf_server.store.leases import CENSUS_JOB

JOB: Final = CENSUS_JOB

# ARGV: P token instance json -> 1 | 0 (not the lease holder)
PUBLISH: Final = r"""
local P = ARGV[1]
if redis.call('GET', P .. 'lj:census') ~= ARGV[2] .. ' ' .. ARGV[3] then return 0 end
redis.call('SET', P .. 'census', ARGV[4])
return 1
"""


def encode(c: Census) -> str:
    return json.dumps({"tokens": dict(c.tokens), "subscriptions": dict(c.subscriptions),
                       "per_server": [[b64u_encode(enc_smp_server(s)), dict(n)] for s, n in c.per_server.items()],
                       "finished_at": c.finished_at, "duration_s": c.duration_s})


def decode(raw: bytes) -> Census | None:
    """None when unreadable (written by another version): the next census replaces it."""
    try:
        d: Any = json.loads(raw)
        per_server = {decode_all(b64u_decode(s), dec_smp_server): _counts(n) for s, n in d["per_server"]}
        return Census(_counts(d["tokens"]), _counts(d["subscriptions"]),
                      MappingProxyType(per_server), float(d["finished_at"]), float(d["duration_s"]))
    except (ValueError, KeyError, TypeError, AttributeError, CodecError):
        return None


def _counts(d: Any) -> MappingProxyType[str, int]:
    return MappingProxyType({str(k): int(v) for k, v in d.items()})


class SharedCensus:
    def __init__(self, dataset: DataSet) -> None:
        self._d = dataset
        self._p = dataset.keys.prefix
        self._publish = dataset.keyed_script(PUBLISH)

    def __repr__(self) -> str:
        return f"<SharedCensus {self._p}census>"

    async def publish(self, census: Census, token: int, instance: str) -> bool:
        """Store ``census`` for the other instances, if ``token`` still holds the census lease."""
        return bool(await self._publish([], [self._p, token, instance, encode(census)]))

    async def latest(self) -> Census | None:
        raw = await self._d.call(self._d.r.get, self._p + "census")
        return decode(raw) if isinstance(raw, bytes) else None
