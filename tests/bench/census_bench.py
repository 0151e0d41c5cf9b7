"""Census benchmark (run by hand, not collected by pytest): what counting tokens and subscriptions by
status (ntf_server/store/census.py) costs Redis, and what it does to other requests' latency.

Fills an embedded Redis/Valkey (or ``--redis-url``) with T tokens and N subscriptions over S SMP servers
written directly in the store's layout (keys.py; token hashes hold only the status field the census
reads), then prints:
  * an unpaced census (duty 1.0): wall time and Redis CPU (INFO used_cpu_user + used_cpu_sys delta);
  * GET latency (p50/p99/max of a request loop) with no census, then during a census paced at the
    default duty (0.2), and that census's wall time.

    .venv/bin/python tests/bench/census_bench.py                                  # 1M tokens, 10M subs
    .venv/bin/python tests/bench/census_bench.py --tokens 100000 --subs 1000000   # quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio

from ntf_server.protocol.encoding import SMPServer, enc_smp_server
from ntf_server.store.atrest import AtRest
from ntf_server.store.census import DUTY, CensusTaker
from ntf_server.store.dataset import DataSet
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.keys import DEFAULT_BUCKETS, Keys, PackedSub, pack_sub

PREFIX = "cbench:"
STATUSES = ("ACTIVE",) * 8 + ("INACTIVE", "END")
SEALED_BYTES = 100  # a sealed (notifier id, key) is about this long


async def fill(r: redis.asyncio.Redis, args: argparse.Namespace) -> None:
    k = Keys(PREFIX, args.buckets)
    t0 = time.monotonic()
    tids = [os.urandom(24) for _ in range(args.tokens)]
    for i in range(0, len(tids), 10_000):
        async with r.pipeline(transaction=False) as pipe:
            for tid in tids[i: i + 10_000]:
                pipe.hset(k.token(tid), "st", "ACTIVE" if tid[0] % 10 else "REGISTERED")
            pipe.zadd(k.g("used"), {tid: 20000 for tid in tids[i: i + 10_000]})
            await pipe.execute()
    per_bucket = args.subs // (args.servers * args.buckets)
    for n in range(1, args.servers + 1):
        srv = SMPServer((f"smp{n}.example.net",), "5223", bytes([n]) * 32)
        await r.hset(k.g("srv:addr"), n, enc_smp_server(srv))
        await r.hset(k.g("srv:count"), n, per_bucket * args.buckets)
        for b0 in range(0, args.buckets, 64):
            async with r.pipeline(transaction=False) as pipe:
                for b in range(b0, min(b0 + 64, args.buckets)):
                    fields = {}
                    for j in range(per_bucket):
                        st = STATUSES[j % len(STATUSES)]
                        fields[os.urandom(20)] = pack_sub(PackedSub(tids[j % len(tids)], False, st,
                                                                    os.urandom(SEALED_BYTES)))
                    pipe.hset(k.bucket(n, b), mapping=fields)  # type: ignore[arg-type]
                await pipe.execute()
    print(f"filled {args.tokens} tokens, {per_bucket * args.buckets * args.servers} subscriptions on "
          f"{args.servers} servers in {time.monotonic() - t0:.0f} s; used_memory "
          f"{(await r.info('memory'))['used_memory'] / 1e9:.2f} GB")


async def cpu(r: redis.asyncio.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def latencies(r: redis.asyncio.Redis, stop: asyncio.Event, out: list[float]) -> None:
    await r.set(PREFIX + "probe", "x")
    while not stop.is_set():
        t = time.perf_counter()
        await r.get(PREFIX + "probe")
        out.append(time.perf_counter() - t)
        await asyncio.sleep(0.001)


def summary(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms, max {max(xs) * 1e3:.1f} ms ({len(xs)} requests)"


async def run(args: argparse.Namespace, url: str) -> None:
    r = redis.asyncio.Redis.from_url(url)
    probe = redis.asyncio.Redis.from_url(url)
    try:
        await fill(r, args)
        c0, t0 = await cpu(r), time.monotonic()
        census = await CensusTaker(DataSet(r, AtRest(os.urandom(32)), Keys(PREFIX, args.buckets)), duty=1.0).take()
        print(f"unpaced census: {time.monotonic() - t0:.1f} s wall, Redis CPU {await cpu(r) - c0:.1f} s; "
              f"{sum(census.tokens.values())} tokens {dict(census.tokens)}, "
              f"{sum(census.subscriptions.values())} subscriptions {dict(census.subscriptions)}")
        base: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(latencies(probe, stop, base))
        await asyncio.sleep(args.baseline_s)
        stop.set()
        await task
        print(f"GET without census: {summary(base)}")
        during: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(latencies(probe, stop, during))
        t0 = time.monotonic()
        await CensusTaker(DataSet(r, AtRest(os.urandom(32)), Keys(PREFIX, args.buckets)), duty=DUTY).take()
        wall = time.monotonic() - t0
        stop.set()
        await task
        print(f"GET during a census paced at duty {DUTY}: {summary(during)}; that census took {wall:.1f} s")
    finally:
        await r.aclose()
        await probe.aclose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--subs", type=int, default=10_000_000)
    p.add_argument("--servers", type=int, default=50)
    p.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS)
    p.add_argument("--baseline-s", type=float, default=10.0)
    p.add_argument("--redis-url", default="")
    args = p.parse_args()
    if args.redis_url:
        await run(args, args.redis_url)
        return
    with tempfile.TemporaryDirectory() as d:
        async with EmbeddedRedis(Path(d)) as url:
            await run(args, url)


if __name__ == "__main__":
    asyncio.run(main())
