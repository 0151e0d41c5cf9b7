"""Store benchmark (run by hand, not collected by pytest).

Loads N subscriptions (default 1,000,000) over T tokens and S SMP servers through the real `RedisStore` API
into an embedded Redis/Valkey (AOF on, as in production; `REDIS_SERVER_BIN` picks the binary) or into
`--redis-url`, then prints: load rate, Redis memory per subscription (INFO used_memory delta / count), and
the time to page through every subscription of one SMP server. Targets: ≤ 250 B/subscription,
≥ 50,000 subscriptions/s paging.

    .venv/bin/python tests/bench/store_bench.py                 # full run (1M, a few minutes)
    .venv/bin/python tests/bench/store_bench.py --subs 100000   # quick run
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers.store_helpers import notifier_key, server, token

from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.keys import DEFAULT_BUCKETS
from ntf_server.store.records import SUB_PENDING, TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore


async def used_memory(url: str) -> int:
    c = redis.asyncio.Redis.from_url(url)
    try:
        info = await c.info("memory")
        return int(info["used_memory"])
    finally:
        await c.aclose()


async def server_version(url: str) -> str:
    c = redis.asyncio.Redis.from_url(url)
    try:
        info = await c.info("server")
    finally:
        await c.aclose()
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info['redis_version']}"


async def run(args: argparse.Namespace, url: str) -> None:
    store = await RedisStore.connect(url, secrets.token_bytes(32), prefix="bench:", buckets=args.buckets)
    servers = [server(i + 1) for i in range(args.servers)]
    print(f"server: {await server_version(url)}; buckets per SMP server: {args.buckets}")

    tokens = [replace(token(), status=TOKEN_ACTIVE) for _ in range(args.tokens)]
    for t in tokens:
        await store.create_token(t)
    base = await used_memory(url)

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.subs):
        queue.put_nowait(i)
    key = notifier_key()  # the same key bytes for all: sealing still makes each stored value distinct

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            nid = i.to_bytes(8, "big") + secrets.token_bytes(16)
            await store.create_subscription(tokens[i % len(tokens)].token_id, servers[i % len(servers)], nid, key)

    t0 = time.perf_counter()
    progress = asyncio.create_task(report_progress(queue, args.subs, t0))
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    progress.cancel()
    load_s = time.perf_counter() - t0
    after = await used_memory(url)
    counts = await store.counts()
    assert counts.subscriptions == args.subs, counts
    print(f"loaded {args.subs:,} subscriptions in {load_s:.1f} s: {args.subs / load_s:,.0f} subscriptions/s")
    print(f"memory: {(after - base) / args.subs:.0f} bytes per subscription (used_memory delta {after - base:,})")

    rates = []
    for rep in range(3):
        n = 0
        t0 = time.perf_counter()
        async for page in store.iter_server_subscriptions(servers[rep], page_size=900):
            n += len(page)
        dt = time.perf_counter() - t0
        rates.append(n / dt)
        print(f"paging server {rep + 1}: {n:,} subscriptions in {dt:.2f} s ({n / dt:,.0f}/s)")
    print(f"paging median: {statistics.median(rates):,.0f} subscriptions/s")

    # one batch status update as resubscription does after a page (900 notifier ids)
    page = await anext(store.iter_server_subscriptions(servers[0], page_size=900))
    t0 = time.perf_counter()
    await store.set_subscription_statuses(servers[0], [s.notifier_id for s in page], SUB_PENDING)
    print(f"bulk status update of {len(page)}: {(time.perf_counter() - t0) * 1000:.1f} ms")
    await store.close()


async def report_progress(queue: asyncio.Queue[int], total: int, t0: float) -> None:
    while True:
        await asyncio.sleep(10)
        done = total - queue.qsize()
        print(f"  … {done:,} ({done / (time.perf_counter() - t0):,.0f}/s)", flush=True)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subs", type=int, default=1_000_000)
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--servers", type=int, default=50)
    p.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--redis-url", help="benchmark an existing server (use an empty database!)")
    args = p.parse_args()
    if args.redis_url:
        await run(args, args.redis_url)
        return
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        async with EmbeddedRedis(Path(d)) as url:
            await run(args, url)


if __name__ == "__main__":
    asyncio.run(main())
