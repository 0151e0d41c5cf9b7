"""NMSG → APNs (issue 9): sustained pushes/s and NMSG-to-APNs latency, every part in its own process.

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/nmsg_pipeline.py --rates 1000 --rounds 3               # latency
    .venv/bin/python tests/bench/nmsg_pipeline.py --rates 8000 --rounds 3 --warmup 20   # sustained pushes/s

Per rate and round: S SMP stand-ins (``--nmsg-per-s rate/S`` each; every ``msgId`` is its send time in ns)
with Q queues each, a strict APNs simulator (TLS, JWT checked, pushes recorded with their arrival time),
a fresh set of ACTIVE tokens (APNs "test" environment, one queue per token) and subscriptions in the
embedded Redis (a key prefix of its own per round), and the ntf-server side (``RedisStore`` +
``SubscriberPool`` + ``PushPipeline`` + ``ApnsSender``) in its own process. After ``--warmup`` seconds,
``--seconds`` are measured: NMSGs received and pushes delivered per second, and for every push of the window
its latency: arrival at the simulator minus the ``msgId`` that the benchmark decrypts from the push (token
DH secret → ``PNMessageData`` → newest item → ``NMsgMeta`` with the queue's notification DH secret, which
the benchmark derives as the stand-in does). Also the CPU share of each process, to say what bounds it.

Sustained throughput: offer more than the server can take (8,000/s) with a warm-up long enough to fill the
push queue (``--warmup 20``); then the stand-ins offer only what the server reads (back-pressure) and
"NMSG in" ≈ "pushes" is the sustained rate. Latency at such a rate is the full push queue (32,768) over the
rate: only the rate below capacity (1,000/s) gives a meaningful latency.
Goals (issue 9): ≥ 5,000 pushes/s on 2 cores; p99 ≤ 20 ms at 1,000 NMSG/s.

Sharded data sets (`[redis] shards`, store/shards.py): ``--shards 1 3`` runs every round once per shard count,
back to back (round 1 with 1 shard, round 1 with 3, round 2 with 1, …), each in a data set of its own, token
ids from ``store.new_token_id`` as TNEW makes them. A sharded NOTIFY runs in every shard for each batch, so
beside pushes/s each round prints the ntf-server's CPU per notice and Redis's: INFO cpu (used_cpu_sys +
used_cpu_user), INFO commandstats (script calls: one per store round trip) and INFO stats
(total_commands_processed, which counts the commands a script calls) deltas of every Redis node over the
window, per NMSG received. ``--cluster``: a fresh 3-primary Valkey cluster (tests/helpers/valkey_cluster.py, no
replicas) instead of the embedded Valkey; the per-primary split is printed too.

    .venv/bin/python tests/bench/nmsg_pipeline.py --rates 2000 --rounds 3 --shards 1 3             # CPU/notice
    .venv/bin/python tests/bench/nmsg_pipeline.py --rates 8000 --warmup 20 --shards 1 3 --cluster  # capacity
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
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import redis.asyncio
from fleet import Child, cpu_of, emit, load, make_tokens, peak_rss_bytes, ratios, start_standins, stop_all

from apns.client import ApnsClient, App
from apns.jwt import ProviderKey, generate_test_key
from apns.pool import Endpoint
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.push.apns_sender import ApnsSender
from ntf_server.push.budget import HiddenPushes
from ntf_server.push.pipeline import PushPipeline
from ntf_server.push.policy import PolicySettings
from ntf_server.sim.smp_load import seeded_queue
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.subscriber.pool import SubscriberPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers.valkey_cluster import ValkeyCluster

TOPIC = "chat.simplex.app"
KEY_ID = "TESTKEY001"
TEAM_ID = "TESTTEAM01"


# ---------------------------------------------------------------- child processes


async def apns_side(key_file: str) -> None:
    """The simulator; on "dump <file>" it writes every recorded push (token, arrival, body) as JSON lines."""
    key = ProviderKey(Path(key_file).read_bytes(), KEY_ID, TEAM_ID)  # noqa: ASYNC240 - before serving
    sim = ApnsSimulator([SimulatorKey.from_provider_key(key, frozenset({TOPIC}))], port=0)
    await sim.start()
    emit(port=sim.port, ca_file=sim.ca_file)
    while line := await asyncio.to_thread(sys.stdin.readline):
        cmd, *rest = line.split()
        if cmd == "dump":
            lines = [json.dumps([p.device_token, p.received_at, p.body.decode()]) for p in sim.all_pushes()]
            await asyncio.to_thread(Path(rest[0]).write_text, "".join(s + "\n" for s in lines))
            emit(accepted=sim.accepted)
    await sim.stop()


async def ntf_side(url: str, master: bytes, prefix: str, port: int, ca_file: str, key_file: str,
                   profile: str | None, policy: str | None = None, cluster: bool = False, shards: int = 1) -> None:
    store = await RedisStore.connect(url, master, prefix=prefix, cluster=cluster, shards=shards)
    stats = Stats()
    key = ProviderKey(Path(key_file).read_bytes(), KEY_ID, TEAM_ID)  # noqa: ASYNC240 - before serving
    apps = {"test": App(Endpoint("localhost", port, ca_file=ca_file), key, TOPIC)}
    sender = ApnsSender(ApnsClient(apps), apps)
    # --policy: the push policy on (one budget decision per notice inside the batch script), as the server wires it
    settings = PolicySettings.from_json(json.loads(policy or '{"hidden_per_hour": 0}'))
    hidden = HiddenPushes(PolicyStore(store.dataset), settings, store.budgets())
    push = PushPipeline(store, sender, stats, hidden)
    pool = SubscriberPool(store, push, stats)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(push.run())
        tg.create_task(pool.run())
        if profile:
            tg.create_task(_profile(profile))
        while True:
            emit(t=time.time(), cpu=time.process_time(), received=stats["ntf_received"],
                 delivered=stats["ntf_delivered"], failed=stats["ntf_failed"],
                 rss=peak_rss_bytes())
            await asyncio.sleep(1.0)


async def _profile(path: str, after_s: float = 4.0, for_s: float = 8.0) -> None:
    import cProfile

    await asyncio.sleep(after_s)
    with cProfile.Profile() as prof:
        await asyncio.sleep(for_s)
    prof.dump_stats(path)


# ---------------------------------------------------------------- the benchmark


def latencies(dump: Path, tokens: dict[str, TokenRecord], secrets_by_nid: dict[bytes, bytes],
              start: float, end: float) -> list[float]:
    out = []
    for line in dump.read_text().splitlines():
        device, received_at, body = json.loads(line)
        if not start <= received_at < end:
            continue
        data = json.loads(body)["notificationData"]
        tok = tokens[device]
        text = crypto.cb_decrypt(tok.dh_secret, b64u_decode(data["nonce"]), b64u_decode(data["message"]))
        newest = text.decode().split(";")[-1]
        where, _ts, nonce, enc_meta = newest.split(" ")
        nid = b64u_decode(where.rsplit("/", 1)[1])
        meta = S.NMsgMeta.decode(crypto.cb_decrypt(secrets_by_nid[nid], b64u_decode(nonce), b64u_decode(enc_meta)))
        out.append(received_at - int.from_bytes(meta.msg_id, "big") / 1e9)
    return out


SCRIPT_CALLS = ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval", "cmdstat_eval_ro", "cmdstat_fcall")


async def redis_counters(node_urls: list[str]) -> list[tuple[float, int, int]]:
    """Per Redis node: CPU seconds used (user + system, INFO cpu); commands processed (INFO stats: those a
    script calls count too); script calls (INFO commandstats: EVALSHA and kin, one per store round trip)."""
    out = []
    for url in node_urls:
        c = redis.asyncio.Redis.from_url(url)
        try:
            cpu, stats, cmds = await c.info("cpu"), await c.info("stats"), await c.info("commandstats")
        finally:
            await c.aclose()
        out.append((float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(stats["total_commands_processed"]),
                    sum(int(cmds[k]["calls"]) for k in SCRIPT_CALLS if k in cmds)))
    return out


async def one_round(args: argparse.Namespace, url: str, node_urls: list[str], master: bytes, rate: int, rnd: int,
                    shards: int, tmp: Path) -> dict[str, float]:
    key_file = tmp / "key.p8"
    key_file.write_bytes(generate_test_key(KEY_ID, TEAM_ID).key_pem)
    sim = Child([__file__, "--role", "apns", "--key-file", str(key_file)], stdin=True)
    simp = sim.proc
    info = await sim.message()
    prefix = f"nmsg-{rate}-{rnd}-s{shards}"
    standins = await start_standins(args.servers, args.queues, prefix, "--nmsg-per-s", str(rate / args.servers))
    procs = [simp, *(s.proc for s in standins)]
    ntf = None
    try:
        # a prefix of its own: the earlier rounds' servers are gone
        store = await RedisStore.connect(url, master, prefix=f"{prefix}:", cluster=args.cluster, shards=shards)
        toks = [replace(t, token_id=store.new_token_id(t.provider, t.device_token))
                for t in make_tokens(args.servers * args.queues)]
        await load(store, standins, toks, 32)
        await store.close()
        by_device = {t.device_token.decode(): t for t in toks}
        nid_secret = {q.notifier_id: q.rcv_ntf_dh_secret
                      for s in standins for q in (seeded_queue(s.seed, i) for i in range(s.queues))}
        ntf = Child([__file__, "--role", "ntf", "--url", url, "--master", master.hex(), "--prefix", f"{prefix}:",
                     "--port", str(info["port"]),
                     "--ca-file", info["ca_file"], "--key-file", str(key_file),
                     *(["--profile", args.profile] if args.profile else []),
                     *(["--policy", args.policy] if args.policy else []),
                     "--shards", str(shards), *(["--cluster"] if args.cluster else [])])
        procs.append(ntf.proc)
        t_end = time.time() + args.warmup
        while (m := await ntf.message())["t"] < t_end:
            pass
        first, pids = m, [s.proc.pid for s in standins]
        c0 = {"stand-ins": cpu_of(pids), "apns sim": cpu_of([simp.pid])}
        r0 = await redis_counters(node_urls)
        t_end = first["t"] + args.seconds
        while (m := await ntf.message())["t"] < t_end:
            pass
        last = m
        c1 = {"stand-ins": cpu_of(pids), "apns sim": cpu_of([simp.pid])}
        r1 = await redis_counters(node_urls)
        wall = last["t"] - first["t"]
        dump = tmp / f"pushes-{prefix}.jsonl"
        sim.send(f"dump {dump}")
        await sim.message()
        lat = sorted(latencies(dump, by_device, nid_secret, first["t"], last["t"]))
        pushes = (last["delivered"] - first["delivered"]) / wall
        received = last["received"] - first["received"]
        node_cpu = [(b[0] - a[0]) / wall for a, b in zip(r0, r1, strict=True)]
        res = {"offered": rate, "nmsg_s": received / wall, "pushes_s": pushes,
               "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
               "ntf_cpu": (last["cpu"] - first["cpu"]) / wall, "rss_mib": last["rss"] / 2**20,
               "failed": last["failed"] - first["failed"],
               **{k: (c1[k] - c0[k]) / wall for k in c0},
               "redis": sum(node_cpu), **{f"redis{i}": c for i, c in enumerate(node_cpu)},
               "ntf_us": (last["cpu"] - first["cpu"]) / received * 1e6,
               "redis_us": sum(b[0] - a[0] for a, b in zip(r0, r1, strict=True)) / received * 1e6,
               "redis_cmds": sum(b[1] - a[1] for a, b in zip(r0, r1, strict=True)) / received,
               "redis_scripts": sum(b[2] - a[2] for a, b in zip(r0, r1, strict=True)) / received}
        print(f"shards={shards} rate {rate}/s round {rnd + 1}: NMSG in {res['nmsg_s']:,.0f}/s, pushes "
              f"{pushes:,.0f}/s, latency p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms ({len(lat):,} pushes); "
              f"cores busy: ntf "
              f"{res['ntf_cpu']:.2f}, stand-ins {res['stand-ins']:.2f}, APNs sim {res['apns sim']:.2f}, "
              f"redis {res['redis']:.2f}{node_split(node_cpu)}; per NMSG: ntf {res['ntf_us']:.0f} µs CPU, redis "
              f"{res['redis_us']:.0f} µs CPU, {res['redis_scripts']:.2f} script calls, {res['redis_cmds']:.1f} "
              f"commands (with scripts'); ntf RSS {res['rss_mib']:.0f} MiB; "
              f"failed {res['failed']}", flush=True)
        return res
    finally:
        stop_all(procs)


def node_split(node_cpu: list[float]) -> str:
    return f" ({' + '.join(f'{c:.2f}' for c in node_cpu)})" if len(node_cpu) > 1 else ""


@contextlib.asynccontextmanager
async def redis_under_test(args: argparse.Namespace, d: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """(url for the store, url of every Redis node whose CPU counts): the embedded Valkey or a 3-primary cluster."""
    if not args.cluster:
        async with EmbeddedRedis(d) as url:
            yield url, [url]
        return
    cluster = ValkeyCluster(d / "cluster")
    try:
        await asyncio.to_thread(cluster.start, 3, False)
        yield cluster.url, [f"redis://127.0.0.1:{n.port}" for n in cluster.primaries]
    finally:
        cluster.stop()


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        async with redis_under_test(args, Path(d)) as (url, node_urls):
            master = secrets.token_bytes(32)
            for rate in args.rates:
                rows: dict[int, list[dict[str, float]]] = {n: [] for n in args.shards}
                for r in range(args.rounds):
                    for n in args.shards:  # back to back, so a noisy neighbour hits every shard count alike
                        rows[n].append(await one_round(args, url, node_urls, master, rate, r, n, Path(d)))
                meds = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in rows.items()}
                for n, med in meds.items():
                    cpus = [med[f"redis{i}"] for i in range(len(node_urls))]
                    print(f"shards={n} median of {args.rounds} at {rate:,} NMSG/s offered: NMSG in "
                          f"{med['nmsg_s']:,.0f}/s, pushes {med['pushes_s']:,.0f}/s, p50 {med['p50_ms']:.1f} ms, p99 "
                          f"{med['p99_ms']:.1f} ms; "
                          f"cores busy: ntf {med['ntf_cpu']:.2f}, stand-ins {med['stand-ins']:.2f}, APNs sim "
                          f"{med['apns sim']:.2f}, redis {med['redis']:.2f}{node_split(cpus)}; per NMSG: ntf "
                          f"{med['ntf_us']:.0f} µs CPU, redis {med['redis_us']:.0f} µs CPU, "
                          f"{med['redis_scripts']:.2f} script calls, {med['redis_cmds']:.1f} commands (with scripts')",
                          flush=True)
                one = meds[args.shards[0]]
                for n in args.shards[1:]:
                    m = meds[n]
                    print(f"shards={n} / shards={args.shards[0]} at {rate:,}/s (medians): " + ratios(m, one, {
                        "pushes_s": "pushes/s", "ntf_us": "ntf CPU per NMSG", "redis_us": "redis CPU per NMSG",
                        "redis_scripts": "script calls per NMSG", "redis_cmds": "commands per NMSG"}), flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[1000, 8000], help="NMSG/s offered, all stand-ins")
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--queues", type=int, default=250, help="per stand-in (one ACTIVE token each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profile", help="cProfile the ntf-server side 4-12 s after its start, stats to this file")
    ap.add_argument("--policy", help='push policy JSON, e.g. \'{"hidden_per_hour": 3}\' (default: parity, no budget)')
    ap.add_argument("--shards", type=int, nargs="+", default=[1],
                    help="shard counts ([redis] shards), each round once per count, back to back")
    ap.add_argument("--cluster", action="store_true", help="a fresh 3-primary Valkey cluster, not the embedded one")
    ap.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--ca-file", help=argparse.SUPPRESS)
    ap.add_argument("--key-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "apns":
        await apns_side(args.key_file)
    elif args.role == "ntf":
        await ntf_side(args.url, bytes.fromhex(args.master), args.prefix, args.port, args.ca_file, args.key_file,
                       args.profile, args.policy, args.cluster, args.shards[0])
    else:
        await bench(args)


if __name__ == "__main__":
    asyncio.run(main())
