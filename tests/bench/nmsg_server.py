"""NMSG → APNs through the real ``ntf-server start`` (a black box), every part in its own process.

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/nmsg_server.py --rates 200 500 1000 --rounds 3              # latency, CPU
    .venv/bin/python tests/bench/nmsg_server.py --rates 1000 --policy '{"hidden_per_hour": 3}'
    .venv/bin/python tests/bench/nmsg_server.py --rates 8000 --rounds 3 --warmup 20          # saturation
    .venv/bin/python tests/bench/nmsg_server.py --rates 1000 --rounds 1 --py-spy /tmp/ntf.svg
    .venv/bin/python tests/bench/nmsg_server.py --rates 8000 --workers 1 2 --warmup 20     # workers, same run

Per rate and round: ``ntf-server init`` into a fresh directory, its TOML pointed at a strict APNs simulator
(``nmsg_pipeline.py --role apns``), at the benchmark's Redis (so the load can be written before the server
starts; its CPU is reported beside the server's) and at S SMP stand-ins (``--nmsg-per-s rate/S`` each, every
``msgId`` its send time in ns); ``--servers x --queues`` ACTIVE tokens (APNs "test" environment) with one
subscription each, written with the server's own store key; then ``ntf-server start`` as a child process,
exactly as an operator runs it. After ``--warmup`` s, ``--seconds`` are measured: pushes/s at the simulator,
the latency of every push of the window (arrival minus the ``msgId`` decrypted from it, as nmsg_pipeline.py
does), and CPU per push: the server process, and the server plus Redis (what an operator's machine spends).

``--workers 1 2``: the same rates and rounds with ``[server] workers`` = 1, then 2 (README "Workers"), in one
run, and the ratio of the medians; the server's CPU is then the supervisor's and its workers'. Give the workers
a longer ``--warmup`` (20 s): the first worker up takes every SMP server and hands the second its share one
server per lease round (3 s), and the window should start once they are shared out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet import Child, cpu_of, load, make_tokens, start_standins, stop_all
from nmsg_pipeline import KEY_ID, TEAM_ID, TOPIC, latencies

from apns.jwt import generate_test_key
from ntf_server.push.policy import PolicySettings
from ntf_server.sim.smp_load import seeded_queue
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.policy import PolicyStore
from ntf_server.store.redis import RedisStore

CLI = str(Path(sys.executable).parent / "ntf-server")
PIPELINE = str(Path(__file__).with_name("nmsg_pipeline.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def edit_toml(path: Path, changes: dict[str, dict[str, object]]) -> None:
    """Set existing keys of the TOML that ``init`` wrote (every setting is written, so every key exists)."""
    section, out = "", []
    for line in path.read_text().splitlines():
        new = line
        if m := re.match(r"\[(.+)\]\s*$", line):
            section = m.group(1)
        elif "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0].strip()
            if key in changes.get(section, {}):
                new = f"{key} = {toml_value(changes[section][key])}"
        out.append(new)
    path.write_text("\n".join(out) + "\n")


def init_server(d: Path, url: str, prefix: str, sim: dict[str, Any], p8: Path, workers: int) -> None:
    subprocess.run([CLI, "--config-dir", str(d), "init", "--host", "localhost"], check=True,
                   stdout=subprocess.DEVNULL)
    text = (d / "ntf-server.toml").read_text()
    subscriber: dict[str, object] = {"allow_private_hosts": True} if "allow_private_hosts" in text else {}
    edit_toml(d / "ntf-server.toml", {
        "server": {"port": free_port(), "bind": "127.0.0.1", "workers": workers},
        "redis": {"url": url, "key_prefix": prefix},
        "apns.test": {"enabled": True, "host": "localhost", "port": sim["port"], "ca_file": sim["ca_file"],
                      "key_file": str(p8), "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC},
        "push": {"hidden_per_hour": 0.0},
        "admin": {"port": 0},
        "log": {"level": "warning"},
        "subscriber": subscriber,
    })


async def wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    while line := await asyncio.to_thread(proc.stdout.readline):
        if line.startswith("Listening on port"):
            return
    raise RuntimeError(f"ntf-server start ended (exit {proc.wait()})")


async def py_spy(pid: int, out: str, seconds: float, *, subprocesses: bool = False) -> None:
    spy = Path(sys.executable).parent / "py-spy"
    fmt = "raw" if out.endswith(".txt") else "flamegraph"
    proc = await asyncio.create_subprocess_exec(str(spy), "record", "-p", str(pid), "-d", str(int(seconds)),
                                                "-o", out, "-f", fmt, "-r", "200", "--nonblocking", "--gil",
                                                *(["--subprocesses"] if subprocesses else []),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await proc.wait()


def server_pids(pid: int) -> list[int]:
    """The server: one process, or the supervisor and its workers (its children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *map(int, children.read_text().split())] if children.exists() else [pid]


async def one_round(args: argparse.Namespace, url: str, redis_pid: int, rate: int, rnd: int,
                    tmp: Path, workers: int) -> dict[str, float]:
    p8 = tmp / f"key-{rate}-{rnd}.p8"
    p8.write_bytes(generate_test_key(KEY_ID, TEAM_ID).key_pem)
    p8.chmod(0o600)  # the server refuses a key others can read
    sim = Child([PIPELINE, "--role", "apns", "--key-file", str(p8)], stdin=True)
    info = await sim.message()
    prefix = f"srv-{rate}-{rnd}-w{workers}"
    standins = await start_standins(args.servers, args.queues, prefix, "--nmsg-per-s", str(rate / args.servers))
    procs: list[subprocess.Popen[Any]] = [sim.proc, *(s.proc for s in standins)]
    try:
        d = tmp / f"cfg-{rate}-{rnd}-w{workers}"
        init_server(d, url, f"{prefix}:", info, p8, workers)
        master = load_or_create_store_key(d / "store.key")
        store = await RedisStore.connect(url, master, prefix=f"{prefix}:")
        toks = make_tokens(args.servers * args.queues)
        await load(store, standins, toks, 32)
        if args.policy:
            await PolicyStore(store.dataset).put(PolicySettings.from_json(json.loads(args.policy)))
        await store.close()
        by_device = {t.device_token.decode(): t for t in toks}
        nid_secret = {q.notifier_id: q.rcv_ntf_dh_secret
                      for s in standins for q in (seeded_queue(s.seed, i) for i in range(s.queues))}
        server = subprocess.Popen([CLI, "--config-dir", str(d), "start"], stdout=subprocess.PIPE,  # noqa: ASYNC220
                                  stderr=None, text=True)
        procs.append(server)
        await wait_listening(server)
        await asyncio.sleep(args.warmup)
        pids, ntf = [s.proc.pid for s in standins], server_pids(server.pid)
        t0, c0 = time.time(), {"ntf": cpu_of(ntf), "redis": cpu_of([redis_pid]),
                               "stand-ins": cpu_of(pids), "apns sim": cpu_of([sim.proc.pid])}
        spy = asyncio.create_task(py_spy(server.pid, args.py_spy, args.seconds, subprocesses=workers > 1)) \
            if args.py_spy else None
        await asyncio.sleep(args.seconds)
        t1, c1 = time.time(), {"ntf": cpu_of(ntf), "redis": cpu_of([redis_pid]),
                               "stand-ins": cpu_of(pids), "apns sim": cpu_of([sim.proc.pid])}
        if spy is not None:
            await spy
        wall = t1 - t0
        dump = tmp / f"pushes-{prefix}.jsonl"
        sim.send(f"dump {dump}")
        await sim.message()
        lat = sorted(latencies(dump, by_device, nid_secret, t0, t1))
        busy = {k: (c1[k] - c0[k]) / wall for k in c0}
        pushes = len(lat) / wall
        res = {"offered": rate, "pushes_s": pushes, "p50_ms": lat[len(lat) // 2] * 1e3,
               "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
               "ntf_us": busy["ntf"] / max(pushes, 1e-9) * 1e6,
               "ntf_redis_us": (busy["ntf"] + busy["redis"]) / max(pushes, 1e-9) * 1e6,
               **{f"busy_{k}": v for k, v in busy.items()}}
        print(f"workers {workers}, rate {rate}/s round {rnd + 1}: pushes {pushes:,.0f}/s, latency p50 "
              f"{res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms ({len(lat):,} pushes); CPU per push: server "
              f"{res['ntf_us']:,.0f} µs, "
              f"server + Redis {res['ntf_redis_us']:,.0f} µs; cores busy: ntf {busy['ntf']:.2f}, redis "
              f"{busy['redis']:.2f}, stand-ins {busy['stand-ins']:.2f}, APNs sim {busy['apns sim']:.2f}", flush=True)
        return res
    finally:
        workers = server_pids(procs[-1].pid)[1:] if len(procs) > len(standins) + 1 else []
        for p in procs[len(standins) + 1:]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        stop_all(procs)
        for pid in workers:  # a supervisor killed by stop_all leaves its workers draining on their own: end them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ntf-bench-") as d:
        redis = EmbeddedRedis(Path(d) / "redis")
        url = await redis.start()
        try:
            assert redis.pid is not None
            medians: dict[tuple[int, int], float] = {}
            for workers in args.workers:
                for rate in args.rates:
                    medians[(workers, rate)] = await _rate(args, url, redis.pid, rate, Path(d), workers)
            for (workers, rate), pushes in medians.items():
                if workers != args.workers[0]:
                    base = medians[(args.workers[0], rate)]
                    print(f"at {rate:,} NMSG/s offered: workers {workers} pushed {pushes / max(base, 1e-9):.2f}x "
                          f"workers {args.workers[0]} ({pushes:,.0f}/s vs {base:,.0f}/s, medians of this run)")
        finally:
            await redis.stop()


async def _rate(args: argparse.Namespace, url: str, redis_pid: int, rate: int, tmp: Path, workers: int) -> float:
    rows = [await one_round(args, url, redis_pid, rate, r, tmp, workers) for r in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"workers {workers}: median of {len(rows)} at {rate:,} NMSG/s offered: pushes {med['pushes_s']:,.0f}/s, "
          f"p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms; CPU per push: server {med['ntf_us']:,.0f} µs, "
          f"server + Redis {med['ntf_redis_us']:,.0f} µs; cores busy: ntf {med['busy_ntf']:.2f}, redis "
          f"{med['busy_redis']:.2f}, stand-ins {med['busy_stand-ins']:.2f}, APNs sim {med['busy_apns sim']:.2f}",
          flush=True)
    return med["pushes_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[1000], help="NMSG/s offered, all stand-ins")
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--queues", type=int, default=100, help="per stand-in (one ACTIVE token each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--policy", help='push policy JSON set through Redis before start (default: parity)')
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="[server] workers: each value in turn, same rates and rounds (default 1)")
    ap.add_argument("--py-spy", help="profile the server with py-spy during the window (.svg flame graph, .txt raw)")
    args = ap.parse_args()
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
