"""What authenticating token records at rest costs per read (issue 16.10; run by hand, prints medians).

A token record is decoded on every request that names a token and on every push: ``decode`` checks its
three MACs (codec.py) on top of opening its four sealed fields, which ``decode_unchecked`` alone does
(the work of a read before the MACs). CPU only, no Redis: the same record, 5 x 2,000 decodes, best of
each repeat, median of 5 rounds.

    .venv/bin/python tests/bench/record_auth.py
"""

from __future__ import annotations

import os
import statistics
import timeit
from collections.abc import Callable
from dataclasses import replace

from ntf_server.store.atrest import AtRest
from ntf_server.store.codec import DUMMY_TOKEN, TokenCodec


def per_call_us(fn: Callable[[], object]) -> float:
    rounds = [min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6 for _ in range(5)]
    return statistics.median(rounds)


def main() -> None:
    codec = TokenCodec(AtRest(os.urandom(32)))
    t = replace(DUMMY_TOKEN, token_id=os.urandom(24))
    fields = codec.encode(t)
    pairs = zip(fields[::2], fields[1::2], strict=True)
    h = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in pairs}
    assert codec.decode(t.token_id, h) == t
    before = per_call_us(lambda: codec.decode_unchecked(t.token_id, h))
    after = per_call_us(lambda: codec.decode(t.token_id, h))
    print(f"token decode without MACs {before:.1f} µs, with MACs {after:.1f} µs: +{after - before:.1f} µs a read")


if __name__ == "__main__":
    main()
