"""Resubscribe on start (issue 9): N subscriptions across S SMP stand-ins, from start to all ACTIVE.

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/resubscribe.py                           # 1,000,000 subs, 20 stand-ins
    .venv/bin/python tests/bench/resubscribe.py --subs 200000 --rounds 3

1. S stand-ins (``python -m ntf_server.sim.smp_server --queues N/S``), each in its own process.
2. A fresh embedded Redis (AOF on, as in production); ACTIVE tokens and one subscription per stand-in queue
   stored through ``RedisStore`` (many ``create_subscription`` calls in flight); load time reported apart.
3. Each round: a new process (the ntf-server side: ``RedisStore`` + ``SubscriberPool``, no NTF listener)
   starts the pool, which pages the store and subscribes everything; the round ends when every
   subscription was written ACTIVE to the store (counted at the store edge: rows actually changed).
   Reported: wall time, subscriptions/s, that process's peak RSS and CPU, its CPU per subscription divided
   by one Ed25519 signature measured in the same process (each NSUB needs one: 1.0 is the floor), and the
   CPU of the stand-ins (they verify every NSUB) and of Redis in the same window, to say what bounds it.
   Between rounds every subscription is set back to INACTIVE (as after a restart), untimed.
Goals (issue 9): ≤ 60 s wall for 1M on 2 cores; CPU ratio ≤ 2.0; RSS ≤ 1 GB.

``--services`` (issue 17): the pool uses service certificates. An untimed first round subscribes (and
ties) everything with one NSUB per queue; each timed round then restarts the ntf side, which resubscribes
with one NSUBS per stand-in; the round ends when every stand-in answered SOKS with the count and IdsHash
stored (no drift, no NSUB sent). Goals: ≤ 10 s wall for 1M on 20 stand-ins, ≤ 10 µs CPU per subscription.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet import Child, cpu_of, emit, load, make_tokens, peak_rss_bytes, start_standins, stop_all

from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.sim.smp_load import seeded_key_der
from ntf_server.store.base import ServiceState, StoreCounts
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.records import (
    SUB_INACTIVE,
    Notice,
    ResubQueue,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
)
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.pool import SubscriberPool

PREFIX = "resub"


# ---------------------------------------------------------------- the ntf-server side (child process)


class CountingStore:
    """The pool's store, counting subscriptions actually changed to ACTIVE (the measured end)."""

    def __init__(self, store: RedisStore) -> None:
        self._s = store
        self.active = 0

    async def servers_with_subscriptions(self) -> list[SMPServer]:
        return await self._s.servers_with_subscriptions()

    def iter_server_queues(self, server: SMPServer, page_size: int = 900, untied_only: bool = False
                           ) -> AsyncIterator[list[ResubQueue]]:
        return self._s.iter_server_queues(server, page_size, untied_only)

    async def set_subscription_statuses(self, server: SMPServer, notifier_ids: Sequence[bytes], status: SubStatus,
                                        service_assoc: bool | None = None,
                                        only_from: Collection[SubStatusKind] | None = None,
                                        fence: str | None = None) -> int:
        n = await self._s.set_subscription_statuses(server, notifier_ids, status, service_assoc, only_from, fence)
        if status.kind is SubStatusKind.ACTIVE:
            self.active += n
        return n

    async def counts(self) -> StoreCounts:  # the pool reads the total at start (resubscription progress)
        return await self._s.counts()

    async def has_live_subscriptions(self, server: SMPServer) -> bool:
        return await self._s.has_live_subscriptions(server)

    async def token_subscriptions(self, token_id: bytes) -> list[SubscriptionRecord]:
        return await self._s.token_subscriptions(token_id)

    async def service_credentials(self, server: SMPServer,
                                  make: Callable[[], ServiceCredentials]) -> ServiceCredentials:
        return await self._s.service_credentials(server, make)

    async def service_state(self, server: SMPServer) -> ServiceState:
        return await self._s.service_state(server)

    async def set_service_id(self, server: SMPServer, service_id: bytes | None) -> None:
        await self._s.set_service_id(server, service_id)

    async def set_service_ties(self, server: SMPServer, count: int, ids_hash: bytes) -> None:
        await self._s.set_service_ties(server, count, ids_hash)

    def tied_subscriptions(self, server: SMPServer, page_size: int = 900
                           ) -> AsyncGenerator[list[SubscriptionRecord], None]:
        return self._s.tied_subscriptions(server, page_size)


class NoPush:
    async def accept(self, server: SMPServer, notices: Sequence[Notice]) -> None:
        raise AssertionError("no NMSG expected in this benchmark")


def sign_cost_s(n: int = 20_000) -> tuple[float, float]:
    """One Ed25519 signature of about an NSUB's size: (cryptography/OpenSSL, libsodium through PyNaCl)."""
    seeds = [seeded_key_der(b"sign-cost", i)[1][-32:] for i in range(200)]
    keys = [Ed25519PrivateKey.from_private_bytes(s) for s in seeds]
    sodium = [crypto.SodiumEd25519Key(s) for s in seeds]
    msg = bytes(110)  # about what an NSUB signs: session id, corrId, entity id, command
    out = []
    for signers in (keys, sodium):
        t0 = time.process_time()
        for i in range(n):
            signers[i % len(signers)].sign(msg)
        out.append((time.process_time() - t0) / n)
    return out[0], out[1]


async def ntf_side(url: str, master: bytes, expected: int, services: int = 0, shards: int = 1) -> None:
    """``services``: 0 (plain), -1 (services on, end when ``expected`` are ACTIVE: the tying round), or the
    number of stand-ins (end when each answered NSUBS as expected)."""
    raw = await RedisStore.connect(url, master, prefix="bench:", shards=shards)
    store = CountingStore(raw)
    stats = Stats()
    pool = SubscriberPool(store, NoPush(), stats, services=services != 0)
    emit(event="start")
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(pool.run())
    last = t0

    def done() -> bool:
        if services > 0:
            return stats["smp_service_subscribed"] >= services
        return store.active >= expected

    while not done():
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
        if time.perf_counter() - last >= 10:
            last = time.perf_counter()
            print(f"{store.active:,} active after {last - t0:.0f} s", flush=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_bytes()
    if services > 0:  # NSUBS answered as stored: nothing fell back to NSUB
        assert stats["smp_nsub_sent"] == 0 and stats["smp_service_drift"] == 0, stats
    emit(event="done", wall=wall, cpu=cpu, rss=rss, active=store.active)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    openssl, sodium = sign_cost_s()
    emit(event="sign", sign_s=openssl, sodium_s=sodium)
    await raw.close()


# ---------------------------------------------------------------- the benchmark (parent process)


async def reset_inactive(store: RedisStore, servers: Sequence[SMPServer]) -> None:
    for s in servers:
        async for page in store.iter_server_subscriptions(s, 1000):
            await store.set_subscription_statuses(s, [r.notifier_id for r in page], SUB_INACTIVE)


async def bench(args: argparse.Namespace, url: str, redis_pid: int) -> None:
    each = args.subs // args.servers
    total = each * args.servers
    t0 = time.perf_counter()
    standins = await start_standins(args.servers, each, PREFIX)
    pids = [s.proc.pid for s in standins]
    try:
        print(f"{args.servers} stand-ins with {each:,} queues each up in {time.perf_counter() - t0:.1f} s", flush=True)
        master = secrets.token_bytes(32)
        store = await RedisStore.connect(url, master, prefix="bench:", shards=args.shards)
        tok_s, sub_s = await load(store, standins, make_tokens(args.tokens), args.concurrency, args.keys_as_sent)
        print(f"loaded {args.tokens:,} ACTIVE tokens in {tok_s:.1f} s; {total:,} subscriptions in {sub_s:.1f} s "
              f"({total / sub_s:,.0f}/s)", flush=True)
        rows = []
        child_args = [__file__, "--role", "ntf", "--url", url, "--master", master.hex(), "--expect", str(total),
                      "--shards", str(args.shards)]
        if args.services:  # the untimed first round: one NSUB per queue ties them all to our service
            t0 = time.perf_counter()
            tie = Child([*child_args, "--service-mode", "-1"])
            for _ in range(3):
                await tie.message()
            tie.proc.wait()
            print(f"first subscription with services (ties every queue): {time.perf_counter() - t0:.1f} s",
                  flush=True)
            child_args += ["--service-mode", str(args.servers)]
        for rnd in range(args.rounds):
            if rnd and not args.services:
                await reset_inactive(store, [s.address for s in standins])
            child = Child([*child_args, *(["--profile", args.profile] if args.profile else [])])
            await child.message()
            sc0, rc0 = cpu_of(pids), cpu_of([redis_pid])
            done = await child.message()
            sc, rc = cpu_of(pids) - sc0, cpu_of([redis_pid]) - rc0
            costs = await child.message()
            sign, sodium = costs["sign_s"], costs["sodium_s"]
            child.proc.wait()
            wall, cpu = done["wall"], done["cpu"]
            ratio = cpu / total / sign
            rows.append((wall, total / wall, done["rss"] / 2**20, ratio, sc / wall, cpu / wall, rc / wall,
                         cpu / total / sodium))
            what = "resubscribed" if args.services else "ACTIVE"
            print(f"round {rnd + 1}: {total:,} {what} in {wall:.1f} s = {total / wall:,.0f} subs/s; ntf-server "
                  f"peak RSS {done['rss'] / 2**20:.0f} MiB, CPU {cpu:.1f} s = {cpu / total * 1e6:.1f} µs/sub = "
                  f"{ratio:.2f} × one Ed25519 signature ({sign * 1e6:.1f} µs, OpenSSL via cryptography; "
                  f"{cpu / total / sodium:.2f} × libsodium's, {sodium * 1e6:.1f} µs); stand-ins CPU {sc:.1f} s "
                  f"({sc / total * 1e6:.1f} µs/sub), Redis CPU {rc:.1f} s; cores busy: ntf {cpu / wall:.2f}, "
                  f"stand-ins {sc / wall:.2f}, redis {rc / wall:.2f}", flush=True)
        med = [statistics.median(r[i] for r in rows) for i in range(8)]
        print(f"median of {len(rows)}: {total:,} subs / {args.servers} servers in {med[0]:.1f} s, "
              f"{med[1]:,.0f} subs/s, RSS {med[2]:.0f} MiB, CPU ratio {med[3]:.2f} (vs libsodium {med[7]:.2f}); "
              f"cores busy: ntf {med[5]:.2f}, "
              f"stand-ins {med[4]:.2f}, redis {med[6]:.2f} (of 2)")
        await store.close()
    finally:
        stop_all([s.proc for s in standins])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subs", type=int, default=1_000_000)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64, help="create_subscription calls in flight")
    ap.add_argument("--profile", help="write the ntf-server side's cProfile stats to this file")
    ap.add_argument("--keys-as-sent", action="store_true",
                    help="store notifier keys as the app sends them (PKCS#8 v0), not as SNEW stores them")
    ap.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--services", action="store_true", help="service certificates: resubscribe with NSUBS")
    ap.add_argument("--shards", type=int, default=1, help="the data set in this many shards ([redis] shards)")
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--service-mode", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "ntf":
        side = ntf_side(args.url, bytes.fromhex(args.master), args.expect, args.service_mode, args.shards)
        if args.profile:
            import cProfile
            with cProfile.Profile() as prof:
                await side
            prof.dump_stats(args.profile)
        else:
            await side
        return
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        redis = EmbeddedRedis(Path(d))
        url = await redis.start()
        try:
            assert redis.pid is not None
            await bench(args, url, redis.pid)
        finally:
            await redis.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
