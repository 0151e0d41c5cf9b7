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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fleet import Child, cpu_of, emit, load, make_tokens, peak_rss_bytes, start_standins, stop_all

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
                   profile: str | None, policy: str | None = None) -> None:
    store = await RedisStore.connect(url, master, prefix=prefix)
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


async def one_round(args: argparse.Namespace, url: str, master: bytes, redis_pid: int, rate: int, rnd: int,
                    tmp: Path) -> dict[str, float]:
    key_file = tmp / "key.p8"
    key_file.write_bytes(generate_test_key(KEY_ID, TEAM_ID).key_pem)
    sim = Child([__file__, "--role", "apns", "--key-file", str(key_file)], stdin=True)
    simp = sim.proc
    info = await sim.message()
    prefix = f"nmsg-{rate}-{rnd}"
    standins = await start_standins(args.servers, args.queues, prefix, "--nmsg-per-s", str(rate / args.servers))
    procs = [simp, *(s.proc for s in standins)]
    ntf = None
    try:
        store = await RedisStore.connect(url, master, prefix=f"{prefix}:")  # the earlier rounds' servers are gone
        toks = make_tokens(args.servers * args.queues)
        await load(store, standins, toks, 32)
        await store.close()
        by_device = {t.device_token.decode(): t for t in toks}
        nid_secret = {q.notifier_id: q.rcv_ntf_dh_secret
                      for s in standins for q in (seeded_queue(s.seed, i) for i in range(s.queues))}
        ntf = Child([__file__, "--role", "ntf", "--url", url, "--master", master.hex(), "--prefix", f"{prefix}:",
                     "--port", str(info["port"]),
                     "--ca-file", info["ca_file"], "--key-file", str(key_file),
                     *(["--profile", args.profile] if args.profile else []),
                     *(["--policy", args.policy] if args.policy else [])])
        procs.append(ntf.proc)
        t_end = time.time() + args.warmup
        while (m := await ntf.message())["t"] < t_end:
            pass
        first, pids = m, [s.proc.pid for s in standins]
        c0 = {"stand-ins": cpu_of(pids), "apns sim": cpu_of([simp.pid]), "redis": cpu_of([redis_pid])}
        t_end = first["t"] + args.seconds
        while (m := await ntf.message())["t"] < t_end:
            pass
        last = m
        c1 = {"stand-ins": cpu_of(pids), "apns sim": cpu_of([simp.pid]), "redis": cpu_of([redis_pid])}
        wall = last["t"] - first["t"]
        dump = tmp / f"pushes-{prefix}.jsonl"
        sim.send(f"dump {dump}")
        await sim.message()
        lat = sorted(latencies(dump, by_device, nid_secret, first["t"], last["t"]))
        pushes = (last["delivered"] - first["delivered"]) / wall
        res = {"offered": rate, "nmsg_s": (last["received"] - first["received"]) / wall, "pushes_s": pushes,
               "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
               "ntf_cpu": (last["cpu"] - first["cpu"]) / wall, "rss_mib": last["rss"] / 2**20,
               "failed": last["failed"] - first["failed"],
               **{k: (c1[k] - c0[k]) / wall for k in c0}}
        print(f"rate {rate}/s round {rnd + 1}: NMSG in {res['nmsg_s']:,.0f}/s, pushes {pushes:,.0f}/s, latency p50 "
              f"{res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms ({len(lat):,} pushes); cores busy: ntf "
              f"{res['ntf_cpu']:.2f}, stand-ins {res['stand-ins']:.2f}, APNs sim {res['apns sim']:.2f}, "
              f"redis {res['redis']:.2f}; ntf RSS {res['rss_mib']:.0f} MiB; failed {res['failed']}", flush=True)
        return res
    finally:
        stop_all(procs)


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        redis = EmbeddedRedis(Path(d))
        url = await redis.start()
        try:
            assert redis.pid is not None
            master = secrets.token_bytes(32)
            for rate in args.rates:
                rows = [await one_round(args, url, master, redis.pid, rate, r, Path(d)) for r in range(args.rounds)]
                med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                print(f"median of {len(rows)} at {rate:,} NMSG/s offered: pushes {med['pushes_s']:,.0f}/s, p50 "
                      f"{med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms; cores busy: ntf {med['ntf_cpu']:.2f}, "
                      f"stand-ins {med['stand-ins']:.2f}, APNs sim {med['apns sim']:.2f}, redis {med['redis']:.2f}",
                      flush=True)
        finally:
            await redis.stop()


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
                       args.profile, args.policy)
    else:
        await bench(args)


if __name__ == "__main__":
    asyncio.run(main())
