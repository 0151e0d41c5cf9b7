"""Memory per token and per subscription, one Redis against a cluster (run by hand, not collected by pytest).

Loads the same data (T ACTIVE tokens, their ids from `store.new_token_id` as TNEW makes them, then N
subscriptions over S SMP servers, through the real `RedisStore` API) into an embedded Valkey and into a fresh
3-primary Valkey cluster (tests/helpers/valkey_cluster.py, no replicas: a replica holds a copy of its primary's
memory), once per ``--shards`` count (`[redis] shards`, store/shards.py), and prints the INFO used_memory delta
per token and per subscription for each, and how the cluster's share is spread over its primaries (README
"Cluster mode": a one-shard data set is one hash slot, so one primary holds it all; N shards are N slots spread
evenly, so with 3 shards on 3 primaries each should hold about a third). Also the load rates, since a sharded
SNEW first asks the other shards whether another token has the queue.

    .venv/bin/python tests/bench/cluster_memory.py                      # 10,000 tokens, 100,000 subscriptions
    .venv/bin/python tests/bench/cluster_memory.py --shards 3
    .venv/bin/python tests/bench/cluster_memory.py --subs 1000000 --tokens 100000
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from helpers.store_helpers import notifier_key, server, token
from helpers.valkey_cluster import ValkeyCluster, serves

from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.records import TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore
from ntf_server.store.shards import shard_prefixes, slot_of


async def used_memory(urls: list[str]) -> list[int]:
    out = []
    for url in urls:
        c = redis.asyncio.Redis.from_url(url)
        try:
            out.append(int((await c.info("memory"))["used_memory"]))
        finally:
            await c.aclose()
    return out


async def load(url: str, node_urls: list[str], cluster: bool, shards: int,
               args: argparse.Namespace) -> tuple[float, float, list[int], float, float]:
    """(bytes per token, bytes per subscription, bytes per node of the whole load, tokens/s, subscriptions/s)."""
    store = await RedisStore.connect(url, secrets.token_bytes(32), prefix="mem:", buckets=args.buckets,
                                     cluster=cluster, shards=shards)
    base = await used_memory(node_urls)
    tokens = [replace(t, token_id=store.new_token_id(t.provider, t.device_token))
              for t in (replace(token(), status=TOKEN_ACTIVE) for _ in range(args.tokens))]
    t0 = time.perf_counter()
    for i in range(0, len(tokens), args.concurrency):
        await asyncio.gather(*(store.create_token(t) for t in tokens[i:i + args.concurrency]))
    t1 = time.perf_counter()
    mid = await used_memory(node_urls)
    servers = [server(i + 1) for i in range(args.servers)]
    key = notifier_key()

    async def sub(i: int) -> None:
        nid = i.to_bytes(8, "big") + secrets.token_bytes(16)
        await store.create_subscription(tokens[i % len(tokens)].token_id, servers[i % len(servers)], nid, key)

    t2 = time.perf_counter()
    for i in range(0, args.subs, args.concurrency):
        await asyncio.gather(*(sub(j) for j in range(i, min(i + args.concurrency, args.subs))))
    t3 = time.perf_counter()
    end = await used_memory(node_urls)
    counts = await store.counts()
    assert (counts.tokens, counts.subscriptions) == (args.tokens, args.subs), counts
    await store.close()
    per_token = (sum(mid) - sum(base)) / args.tokens
    per_sub = (sum(end) - sum(mid)) / args.subs
    return (per_token, per_sub, [e - b for e, b in zip(end, base, strict=True)], args.tokens / (t1 - t0),
            args.subs / (t3 - t2))


def spread(per_node: list[int]) -> str:
    total = sum(per_node) or 1
    return ", ".join(f"{b / 1e6:,.1f} MB ({b / total:.0%})" for b in per_node)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subs", type=int, default=100_000)
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--buckets", type=int, default=None,
                   help="per server and shard (default: a new data set's, DEFAULT_BUCKETS / shards)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 3], help="shard counts to load (default: 1 and 3)")
    args = p.parse_args()
    print(f"{args.tokens:,} tokens, {args.subs:,} subscriptions on {args.servers} SMP servers, "
          f"{args.buckets or 'the default'} buckets per server", flush=True)
    for shards in args.shards:
        with tempfile.TemporaryDirectory(prefix="ntf-mem-") as d:
            async with EmbeddedRedis(Path(d) / "single") as url:
                tok, sub, _, tok_s, sub_s = await load(url, [url], False, shards, args)
            print(f"shards={shards} one Redis:  {tok:,.0f} bytes per token, {sub:,.0f} bytes per subscription "
                  f"(loaded {tok_s:,.0f} tokens/s, {sub_s:,.0f} subscriptions/s)", flush=True)
            cluster = ValkeyCluster(Path(d) / "cluster")
            try:
                await asyncio.to_thread(cluster.start, 3, False)
                urls = [f"redis://127.0.0.1:{n.port}" for n in cluster.primaries]
                tok, sub, per_node, tok_s, sub_s = await load(cluster.url, urls, True, shards, args)
                slots = [slot_of(x) for x in shard_prefixes("mem:", shards, cluster=True)]
                where = [next(i for i, n in enumerate(cluster.primaries) if serves(n, slot)) for slot in slots]
            finally:
                cluster.stop()
            print(f"shards={shards} cluster:    {tok:,.0f} bytes per token, {sub:,.0f} bytes per subscription "
                  f"(loaded {tok_s:,.0f} tokens/s, {sub_s:,.0f} subscriptions/s)")
            print(f"shards={shards} cluster, growth per primary: {spread(per_node)}; the shards' slots (primary): "
                  + ", ".join(f"{slot} ({i + 1})" for slot, i in zip(slots, where, strict=True)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
