"""Memory per token and per subscription, one Redis against a cluster (run by hand, not collected by pytest).

Loads the same data (T ACTIVE tokens, then N subscriptions over S SMP servers, through the real `RedisStore`
API) into an embedded Valkey and into a fresh 3-primary Valkey cluster (tests/helpers/valkey_cluster.py, no
replicas: a replica holds a copy of its primary's memory), and prints the INFO used_memory delta per token
and per subscription for each, and how the cluster's share is spread over its primaries (README "Cluster
mode": a data set is one hash slot, so one primary holds it all).

    .venv/bin/python tests/bench/cluster_memory.py                      # 10,000 tokens, 100,000 subscriptions
    .venv/bin/python tests/bench/cluster_memory.py --subs 1000000 --tokens 100000
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from helpers.store_helpers import notifier_key, server, token
from helpers.valkey_cluster import ValkeyCluster

from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.keys import DEFAULT_BUCKETS
from ntf_server.store.records import TOKEN_ACTIVE
from ntf_server.store.redis import RedisStore


async def used_memory(urls: list[str]) -> list[int]:
    out = []
    for url in urls:
        c = redis.asyncio.Redis.from_url(url)
        try:
            out.append(int((await c.info("memory"))["used_memory"]))
        finally:
            await c.aclose()
    return out


async def load(url: str, node_urls: list[str], cluster: bool,
               args: argparse.Namespace) -> tuple[float, float, list[int]]:
    """(bytes per token, bytes per subscription, bytes per node of the whole load)."""
    store = await RedisStore.connect(url, secrets.token_bytes(32), prefix="mem:", buckets=args.buckets,
                                     cluster=cluster)
    base = await used_memory(node_urls)
    tokens = [replace(token(), status=TOKEN_ACTIVE) for _ in range(args.tokens)]
    for i in range(0, len(tokens), args.concurrency):
        await asyncio.gather(*(store.create_token(t) for t in tokens[i:i + args.concurrency]))
    mid = await used_memory(node_urls)
    servers = [server(i + 1) for i in range(args.servers)]
    key = notifier_key()

    async def sub(i: int) -> None:
        nid = i.to_bytes(8, "big") + secrets.token_bytes(16)
        await store.create_subscription(tokens[i % len(tokens)].token_id, servers[i % len(servers)], nid, key)

    for i in range(0, args.subs, args.concurrency):
        await asyncio.gather(*(sub(j) for j in range(i, min(i + args.concurrency, args.subs))))
    end = await used_memory(node_urls)
    assert (await store.counts()).subscriptions == args.subs
    await store.close()
    per_token = (sum(mid) - sum(base)) / args.tokens
    per_sub = (sum(end) - sum(mid)) / args.subs
    return per_token, per_sub, [e - b for e, b in zip(end, base, strict=True)]


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subs", type=int, default=100_000)
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    print(f"{args.tokens:,} tokens, {args.subs:,} subscriptions on {args.servers} SMP servers, "
          f"{args.buckets} buckets per server")
    with tempfile.TemporaryDirectory(prefix="ntf-mem-") as d:
        async with EmbeddedRedis(Path(d) / "single") as url:
            tok, sub, _ = await load(url, [url], False, args)
        print(f"one Redis:  {tok:,.0f} bytes per token, {sub:,.0f} bytes per subscription")
        cluster = ValkeyCluster(Path(d) / "cluster")
        try:
            await asyncio.to_thread(cluster.start, 3, False)
            urls = [f"redis://127.0.0.1:{n.port}" for n in cluster.primaries]
            tok, sub, per_node = await load(cluster.url, urls, True, args)
        finally:
            cluster.stop()
        print(f"cluster:    {tok:,.0f} bytes per token, {sub:,.0f} bytes per subscription")
        print("cluster, growth per primary: " + ", ".join(f"{b / 1e6:,.1f} MB" for b in per_node))


if __name__ == "__main__":
    asyncio.run(main())
