"""APNs client throughput: our ApnsClient vs aioapns 4.0, same simulator, same run.

    .venv/bin/python tests/bench/apns_throughput.py [--pushes 20000] [--concurrency 500] [--rounds 3]

The simulator (`python -m apns.simulator`, TLS, strict checks on, recording off) runs in its own process
pinned to CPU 1; this process (the clients) is pinned to CPU 0, so `time.process_time()` here is client
CPU only. Each round sends --pushes background pushes (~3 KB body, like SimpleX's) through each client
after a warm-up, `--concurrency` sends outstanding at a time, and records wall time, client CPU, per-push
latency and the simulator's CPU (from /proc) to tell whether the simulator was the bottleneck. Prints
per-round figures, medians and the ratios ours/aioapns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from apns.client import ApnsClient, App, ClientConfig
from apns.jwt import ProviderKey, generate_test_key
from apns.payload import Notification, PushType
from apns.pool import Endpoint

TOPIC = "chat.simplex.app"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    name: str
    pushes_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_push: float
    sim_cpu_share: float  # simulator CPU seconds / wall seconds during the run


def body(size: int) -> dict[str, object]:
    return {
        "aps": {"content-available": 1},
        "notificationData": {"checkMessages": True, "nonce": "n" * 32, "message": "m" * size},
    }


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(name: str, send: Callable[[str], Awaitable[None]], n: int, conc: int, sim_pid: int) -> Run:
    tokens = [os.urandom(32).hex() for _ in range(n)]
    lat: list[float] = []
    it = iter(tokens)

    async def worker() -> None:
        for tok in it:
            t0 = time.perf_counter()
            await send(tok)
            lat.append(time.perf_counter() - t0)

    sim0, cpu0, t0 = proc_cpu_s(sim_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall, cpu, sim = time.perf_counter() - t0, time.process_time() - cpu0, proc_cpu_s(sim_pid) - sim0
    lat.sort()
    return Run(name, n / wall, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3, cpu / n * 1e6, sim / wall)


async def ours(
    endpoint: Endpoint, key: ProviderKey, payload: dict[str, object]
) -> tuple[Callable[[str], Awaitable[None]], Callable[[], Awaitable[None]]]:
    client = ApnsClient({"a": App(endpoint, key, TOPIC)}, config=ClientConfig())

    async def send(tok: str) -> None:
        await client.send(Notification(tok, payload, PushType.BACKGROUND))

    return send, client.aclose


async def theirs(
    endpoint: Endpoint, key: ProviderKey, payload: dict[str, object]
) -> tuple[Callable[[str], Awaitable[None]], Callable[[], Awaitable[None]]]:
    from aioapns import APNs, NotificationRequest, PushType as APushType, connection as aconn  # type: ignore[attr-defined]

    # aioapns has no endpoint option: point its production protocol at the simulator.
    aconn.APNsProductionClientProtocol.APNS_SERVER = endpoint.host
    aconn.APNsProductionClientProtocol.APNS_PORT = endpoint.port
    ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    client = APNs(
        key=key.key_pem.decode(),
        key_id=key.key_id,
        team_id=key.team_id,
        topic=TOPIC,
        use_sandbox=False,
        ssl_context=ctx,
    )

    async def send(tok: str) -> None:
        res = await client.send_notification(
            NotificationRequest(tok, payload, priority=5, push_type=APushType.BACKGROUND)
        )
        if not res.is_successful:
            raise RuntimeError(f"aioapns push failed: {res.status} {res.description}")

    async def close() -> None:
        for conn in list(client.pool.connections):
            conn.close()

    return send, close


def report(runs: list[Run]) -> None:
    print(f"{'client':8} {'pushes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/push':>11} {'sim CPU':>7}")
    for r in runs:
        print(
            f"{r.name:8} {r.pushes_per_s:9.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f} {r.cpu_us_per_push:11.1f} "
            f"{r.sim_cpu_share:7.0%}"
        )


async def run(args: argparse.Namespace, key: ProviderKey, endpoint: Endpoint, sim_pid: int) -> None:
    payload = body(args.body_bytes)
    clients = {"ours": await ours(endpoint, key, payload), "aioapns": await theirs(endpoint, key, payload)}
    for name, (send, _close) in clients.items():  # warm-up: connections, JWTs, code paths
        # One push alone first: like APNs, the simulator allows one stream until a valid JWT, and
        # aioapns bursts streams before the server's SETTINGS arrive (its connection then dies).
        await send(os.urandom(32).hex())
        await measure(name, send, 2000, args.concurrency, sim_pid)
    results: dict[str, list[Run]] = {name: [] for name in clients}
    for rnd in range(args.rounds):
        for name, (send, _close) in clients.items():
            results[name].append(await measure(name, send, args.pushes, args.concurrency, sim_pid))
        print(f"-- round {rnd + 1}")
        report([results[n][-1] for n in clients])
    fields = ("pushes_per_s", "p50_ms", "p99_ms", "cpu_us_per_push", "sim_cpu_share")
    med = {n: Run(n, *(statistics.median(getattr(r, f) for r in rs) for f in fields)) for n, rs in results.items()}
    print(
        f"-- medians over {args.rounds} rounds, {args.pushes} pushes each, "
        f"{args.concurrency} outstanding, {len(json.dumps(payload))}-byte bodies"
    )
    report(list(med.values()))
    o, a = med["ours"], med["aioapns"]
    print(
        f"ratios ours/aioapns: pushes/s x{o.pushes_per_s / a.pushes_per_s:.2f}, "
        f"client CPU per push x{o.cpu_us_per_push / a.cpu_us_per_push:.2f} "
        f"(aioapns uses {a.cpu_us_per_push / o.cpu_us_per_push:.1f}x our CPU), "
        f"p50 x{o.p50_ms / a.p50_ms:.2f}"
    )
    if max(o.sim_cpu_share, a.sim_cpu_share) > 0.85:
        print("note: the simulator was near 100% of its core: pushes/s is bounded by it; compare client CPU.")
    for _send, close in clients.values():
        await close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushes", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--body-bytes", type=int, default=3000)
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    key = generate_test_key()
    with tempfile.TemporaryDirectory() as tmp:
        p8, ca = Path(tmp) / "key.p8", Path(tmp) / "ca.pem"
        p8.write_bytes(key.key_pem)
        argv = ["taskset", "-c", "1", sys.executable, "-m", "apns.simulator", "--port", "0", "--no-record"]
        argv += ["--p8", str(p8), "--key-id", key.key_id, "--team-id", key.team_id, "--ca-out", str(ca)]
        sim = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            info = json.loads(sim.stdout.readline())
            endpoint = Endpoint("localhost", info["port"], ca_file=str(ca))
            asyncio.run(run(args, key, endpoint, sim.pid))
        finally:
            sim.terminate()
            sim.wait()


if __name__ == "__main__":
    main()
