"""What a sharded NOTIFY costs, the store alone (run by hand, not collected by pytest).

A notice is found by (SMP server, notifier id), which does not say the shard of a sharded data set (`[redis]
shards`, store/shards.py), so a sharded NOTIFY (store/sharded.py) asks every shard for a queue it has not learnt
the shard of, and only the learnt shard for the others (up to 100,000 queues remembered per process). Measured
here both ways: "learnt" (the same queues notified again: the steady state) and "cold" (every queue once,
through a store object just connected: after a restart, or with more queues than are remembered).
nmsg_pipeline.py measures that inside the whole pipeline,
where the batch size follows the load (one SMP block when quiet, up to ``batch_max`` under load); this drives
`store.notify` directly with fixed batch sizes, ``store_calls`` calls in flight (as the pipeline does), the
policy check and outbox writes as the pipeline has them, and prints, per shard count and batch size (the
counts back to back in each round, medians of the rounds), learnt and cold: notices/s, this process's CPU per
notice, Redis's CPU per notice (INFO cpu used_cpu_sys + used_cpu_user delta of every node) and script calls per
batch.

    .venv/bin/python tests/bench/notify_fanout.py                          # embedded Valkey, shards 1 and 3
    .venv/bin/python tests/bench/notify_fanout.py --cluster --batches 1 256
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from fleet import make_tokens, ratios
from nmsg_pipeline import node_split, redis_counters, redis_under_test

from ntf_server.push.budget import HiddenPushes
from ntf_server.push.policy import PolicySettings
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import Notice
from ntf_server.store.redis import RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers.store_helpers import notifier_key, server


def hidden_of(args: argparse.Namespace, store: RedisStore) -> HiddenPushes:
    """The push pipeline's budgets, with the ``--policy`` document."""
    return HiddenPushes(PolicyStore(store.dataset), PolicySettings.from_json(json.loads(args.policy)), store.budgets())


@contextlib.asynccontextmanager
async def loaded(args: argparse.Namespace, url: str, shards: int, rnd: int) -> AsyncIterator[
        tuple[RedisStore, HiddenPushes, list[Notice], Callable[[], Awaitable[RedisStore]]]]:
    """A data set of its own with ACTIVE tokens (ids from new_token_id, as TNEW) and one subscription each,
    a notice for each subscription, and a function connecting another store object to the data set."""
    master = secrets.token_bytes(32)

    async def connect() -> RedisStore:
        return await RedisStore.connect(url, master, prefix=f"nf-{rnd}-s{shards}:", cluster=args.cluster,
                                        shards=shards)

    store = await connect()
    try:
        toks = [replace(t, token_id=store.new_token_id(t.provider, t.device_token)) for t in make_tokens(args.tokens)]
        servers = [server(i + 1) for i in range(args.servers)]
        for i in range(0, len(toks), 32):
            await asyncio.gather(*(store.create_token(t) for t in toks[i:i + 32]))
        notices = []
        for i, t in enumerate(toks):
            nid = secrets.token_bytes(24)
            created, _ = await store.create_subscription(t.token_id, servers[i % len(servers)], nid, notifier_key())
            assert created.name == "CREATED", created
            notices.append(Notice(servers[i % len(servers)], nid, 0, secrets.token_bytes(24), secrets.token_bytes(80)))
        yield store, hidden_of(args, store), notices, connect
    finally:
        await store.close()


async def measure(args: argparse.Namespace, store: RedisStore, hidden: HiddenPushes, notices: list[Notice],
                  node_urls: list[str], batch: int, total: int) -> dict[str, float]:
    n_batches = max(total // batch, args.store_calls)
    todo = iter(range(n_batches))
    k = 0

    async def caller() -> None:
        nonlocal k
        for _ in todo:
            b = []
            for _ in range(batch):
                n = notices[k % len(notices)]
                b.append(replace(n, received_at_ms=int(time.time() * 1000)))
                k += 1
            budgets, policy = hidden.in_effect
            res = await store.notify(b, budgets, hidden.clock(), policy, args.lease_s, time.time())
            assert isinstance(res, list) and all(d.known for d in res), res

    r0 = await redis_counters(node_urls)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.store_calls)))
    c1, t1 = time.process_time(), time.perf_counter()
    r1 = await redis_counters(node_urls)
    total = n_batches * batch
    return {"notices_s": total / (t1 - t0), "client_us": (c1 - c0) / total * 1e6,
            "redis_us": sum(b[0] - a[0] for a, b in zip(r0, r1, strict=True)) / total * 1e6,
            "scripts_per_batch": sum(b[2] - a[2] for a, b in zip(r0, r1, strict=True)) / n_batches,
            **{f"redis{i}": (b[0] - a[0]) / (t1 - t0) for i, (a, b) in enumerate(zip(r0, r1, strict=True))}}


async def measure_cold(args: argparse.Namespace, connect: Callable[[], Awaitable[RedisStore]],
                       notices: list[Notice], node_urls: list[str], batch: int) -> dict[str, float]:
    """Every queue once, through a store object that has notified none of them (nor cached their places)."""
    store = await connect()
    try:
        return await measure(args, store, hidden_of(args, store), notices, node_urls, batch,
                             len(notices) // batch * batch)
    finally:
        await store.close()


async def bench(args: argparse.Namespace) -> None:
    print(f"{args.tokens:,} ACTIVE tokens, one subscription each on {args.servers} SMP servers; batches of "
          f"{args.batches}, {args.store_calls} calls in flight, ~{args.notices:,} notices per measurement; "
          f"{'3-primary cluster' if args.cluster else 'embedded Valkey'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        async with redis_under_test(args, Path(d)) as (url, node_urls):
            rows: dict[tuple[int, int], list[dict[str, float]]] = {}
            for rnd in range(args.rounds):
                for n in args.shards:  # back to back, so a noisy neighbour hits every shard count alike
                    async with loaded(args, url, n, rnd) as (store, hidden, notices, connect):
                        for b in args.batches:
                            for how in ("cold", "learnt"):
                                if how == "cold":
                                    res = await measure_cold(args, connect, notices, node_urls, b)
                                else:
                                    await measure(args, store, hidden, notices, node_urls, 16, len(notices))  # learn
                                    res = await measure(args, store, hidden, notices, node_urls, b, args.notices)
                                rows.setdefault((how, n, b), []).append(res)
                                print(f"round {rnd + 1} shards={n} batch {b} {how}: {res['notices_s']:,.0f} notices/s, "
                                      f"per notice: client {res['client_us']:.0f} µs CPU, redis "
                                      f"{res['redis_us']:.0f} µs CPU; {res['scripts_per_batch']:.2f} script calls per "
                                      "batch", flush=True)
            for how, b in ((how, b) for how in ("learnt", "cold") for b in args.batches):
                meds = {n: {k: statistics.median(r[k] for r in rows[(how, n, b)]) for k in rows[(how, n, b)][0]}
                        for n in args.shards}
                for n, m in meds.items():
                    cpus = [m[f"redis{i}"] for i in range(len(node_urls))]
                    split = f" {sum(cpus):.2f}{node_split(cpus)}"
                    print(f"{how} batch {b} shards={n} median of {args.rounds}: {m['notices_s']:,.0f} notices/s, per "
                          f"notice: client {m['client_us']:.0f} µs CPU, redis {m['redis_us']:.0f} µs CPU (redis cores "
                          f"busy{split}); {m['scripts_per_batch']:.2f} script calls per batch", flush=True)
                one = meds[args.shards[0]]
                for n in args.shards[1:]:
                    m = meds[n]
                    print(f"{how} batch {b} shards={n} / shards={args.shards[0]}: " + ratios(m, one, {
                        "notices_s": "notices/s", "client_us": "client CPU per notice",
                        "redis_us": "redis CPU per notice"}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256], help="notices per store.notify call")
    ap.add_argument("--cluster", action="store_true", help="a fresh 3-primary Valkey cluster, not the embedded one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--notices", type=int, default=20_000,
                    help="per learnt measurement (a cold one: each queue once, --tokens)")
    ap.add_argument("--store-calls", type=int, default=2, help="calls in flight (the pipeline's store_calls)")
    ap.add_argument("--lease-s", type=float, default=30.0, help="outbox lease (0: no outbox entries)")
    ap.add_argument("--policy", default='{"hidden_per_hour": 0}', help="push policy JSON (default: parity)")
    asyncio.run(bench(ap.parse_args()))


if __name__ == "__main__":
    main()
