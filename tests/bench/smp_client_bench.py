"""One SMP connection end to end (run by hand, not collected by pytest).

The SMP stand-in runs in a separate process with N seeded queues; this process subscribes all of them
through one ``SmpClient`` (chunks of ``--chunk`` queues, at most ``--window`` NSUBs unanswered) and takes
every ``Subscribed`` event. Reported per round: wall time, subscriptions/s, and this process's CPU per
subscription divided by the cost of one Ed25519 signature measured in the same run (each NSUB needs one,
so 1.0 is the floor). Issue 9's goal for the whole ntf-server is ≤ 2.0. Also the stand-in's CPU per
subscription in the same window (it verifies every NSUB). Medians over the rounds; each round is a new
connection (the stand-in moves the subscriptions to it).

    .venv/bin/python tests/bench/smp_client_bench.py                  # 20,000 queues, 3 rounds, v18
    .venv/bin/python tests/bench/smp_client_bench.py --queues 100000 --version 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from fleet import proc_cpu_s

from ntf_server.protocol import smp_events as E
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_session import NotifierQueue
from ntf_server.sim.smp_load import seeded_queue
from ntf_server.subscriber.client import SmpClient

SEED = "client-bench"


def sign_cost(queues: list[NotifierQueue]) -> float:
    msg = bytes(100)
    t0 = time.process_time()
    for q in queues:
        q.key.sign(msg)  # type: ignore[union-attr]
    return (time.process_time() - t0) / len(queues)


async def one_round(address: SMPServer, queues: list[NotifierQueue], chunk: int, window: int) -> tuple[float, float]:
    client = SmpClient(address)
    await client.start()
    done = 0
    room = asyncio.Event()

    async def consume() -> None:
        nonlocal done
        async for batch in client.events():
            for ev in batch:
                if not isinstance(ev, E.Subscribed):
                    raise RuntimeError(f"unexpected {ev!r}")
                done += 1
            room.set()
            if done == len(queues):
                return

    t0, c0 = time.perf_counter(), time.process_time()
    consumer = asyncio.create_task(consume())
    for i in range(0, len(queues), chunk):
        while client.awaiting > window:
            room.clear()
            await room.wait()
        client.subscribe(queues[i : i + chunk])
        await asyncio.sleep(0)
    await consumer
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await client.close()
    return wall, cpu


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--version", type=int, default=18)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--window", type=int, default=5_000)
    args = ap.parse_args()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-m", "ntf_server.sim.smp_server", "--queues", str(args.queues), "--seed", SEED,
         "--max-version", str(args.version)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        address = SMPServer.from_uri(line.split()[1])
        queues = [NotifierQueue(q.notifier_id, q.notifier_key)
                  for q in (seeded_queue(SEED.encode(), i) for i in range(args.queues))]
        walls, ratios, standin = [], [], []
        for r in range(args.rounds):
            sig = sign_cost(queues)
            sc0 = proc_cpu_s(proc.pid)
            wall, cpu = await one_round(address, queues, args.chunk, args.window)
            standin.append((proc_cpu_s(proc.pid) - sc0) / len(queues))
            walls.append(wall)
            ratios.append(cpu / len(queues) / sig)
            print(f"round {r + 1}: {wall:.2f} s, {len(queues) / wall:,.0f} subs/s, "
                  f"CPU {cpu / len(queues) * 1e6:.1f} µs/sub = {ratios[-1]:.2f} × one Ed25519 signature "
                  f"({sig * 1e6:.1f} µs); stand-in CPU {standin[-1] * 1e6:.1f} µs/sub", flush=True)
        wall = statistics.median(walls)
        print(f"median of {args.rounds}: {args.queues:,} queues v{args.version} in {wall:.2f} s, "
              f"{args.queues / wall:,.0f} subs/s, CPU ratio {statistics.median(ratios):.2f}, "
              f"stand-in {statistics.median(standin) * 1e6:.1f} µs/sub")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
