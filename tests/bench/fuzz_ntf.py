"""The long NTF fuzzing run (issue 16): ≥ 1,000,000 fuzzed blocks at an ``ntf-server start`` child process
over real TLS, at NTF versions 1–3, plus garbage handshakes, with the inputs of tests/reliability/ntf_inputs.py
(the CI-sized run is tests/reliability/test_ntf_fuzz.py).

    .venv/bin/python tests/bench/fuzz_ntf.py --inputs 1000000

Every 50 blocks a PING must come back as PONG on the same connection (every reply in between must parse as
the app parses it); a well-behaved client registers and PINGs now and then; the server's RSS, open fds and
Redis memory are sampled. At the end: how long it took, the answers by kind, connections the server
closed, handshakes, the samples, and every error or traceback line of the server's log (none expected).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

import redis.asyncio
from ntf_fuzz import FuzzConnection, garbage_handshake, served
from ntf_inputs import valid_transmission
from server_process import UNLIMITED_REGISTRATION, ServerProcess, error_lines, server_world

from ntf_server.sim.device import ProtocolViolation
from ntf_server.transport.blocks import ConnectionClosed

HOST = "127.0.0.1"
BLOCKS_PER_PING = 50
FUZZ_DEPTH = {  # the command budgets and the ERR AUTH limit would end fuzzed connections early (tested in e2e)
    ("server", "commands_per_connection_per_min"): 0.0, ("server", "commands_per_ip_per_min"): 0.0,
    ("server", "max_auth_failures"): 0,
}
CORPUS = 500  # valid transmissions made (and signed) per connection, then mutated


@dataclass
class Run:
    remaining: int
    done: int = 0
    closed_by_server: Counter[str] = field(default_factory=Counter)
    handshakes: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[float, int, int, int, int]] = field(default_factory=list)  # t, inputs, rss, fds, redis
    served_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    def take(self, n: int) -> int:
        n = min(n, self.remaining)
        self.remaining -= n
        return n


async def fuzz_worker(run: Run, server: ServerProcess, version: int, seed: int) -> None:
    rng = random.Random(seed)
    while run.remaining > 0:
        conn = await FuzzConnection.open(HOST, server.port, server.key_hash, version)
        corpus = [valid_transmission(rng, conn.ident) for _ in range(CORPUS)]
        try:
            while (n := run.take(BLOCKS_PER_PING)) > 0:
                await conn.fuzz(rng, n, corpus)
                run.done += n
        except (ConnectionClosed, ProtocolViolation, TimeoutError) as e:
            run.closed_by_server[f"v{version} {type(e).__name__}: {str(e)[:80]}"] += 1
        finally:
            run.answers.update({f"v{version} {k}": v for k, v in conn.errors.items()})
            run.answers[f"v{version} replies"] += conn.replies
            await conn.close()


async def handshake_worker(run: Run, server: ServerProcess, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        if run.remaining <= 0:
            return
        closed = await garbage_handshake(HOST, server.port, server.key_hash, rng)
        run.handshakes["closed by the server" if closed else "left waiting, we hung up"] += 1
        run.done += 1


async def sampler(run: Run, server: ServerProcess, redis_url: str, every_s: float) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    t0 = time.monotonic()
    try:
        while True:
            rss, fds = server.resources()
            used = int((await client.info("memory"))["used_memory"])
            run.samples.append((time.monotonic() - t0, run.done, rss, fds, used))
            t = time.perf_counter()
            await served(HOST, server.port, server.key_hash)
            run.served_ms.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(every_s)
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-ntf-") as tmp_dir:
        tmp = Path(tmp_dir)
        log_path = Path(args.log) if args.log else tmp / "server.log"
        settings = {**UNLIMITED_REGISTRATION, **FUZZ_DEPTH}
        async with server_world(tmp, settings, record=False, log_path=log_path) as world:
            server, run = world.server, Run(args.inputs)
            t0 = time.monotonic()
            sampling = asyncio.create_task(sampler(run, server, world.redis_url, args.sample_s))
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(args.connections):
                        tg.create_task(fuzz_worker(run, server, 1 + i % 3, args.seed * 1000 + i))
                    tg.create_task(handshake_worker(run, server, int(args.inputs * args.handshake_share),
                                                    args.seed * 1000 + 999))
            finally:
                sampling.cancel()
                elapsed = time.monotonic() - t0
        report(run, elapsed, log_path)


def report(run: Run, elapsed: float, log_path: Path) -> None:
    print(f"{run.done:,} inputs in {elapsed:.0f} s ({run.done / elapsed:,.0f}/s)")
    print(f"connections closed by the server: {dict(run.closed_by_server) or 'none'}")
    print(f"garbage handshakes: {dict(run.handshakes)}")
    print(f"answers: {dict(sorted(run.answers.items()))}")
    if run.served_ms:
        ms = sorted(run.served_ms)
        print(f"a well-behaved client (connect, TNEW, PING): median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms "
              f"over {len(ms)} checks")
    print("t_s inputs rss_MiB fds redis_MiB")
    step = max(1, len(run.samples) // 12)
    for t, n, rss, fds, used in run.samples[::step] + run.samples[-1:]:
        print(f"{t:5.0f} {n:9,} {rss / 2**20:7.1f} {fds:4} {used / 2**20:7.1f}")
    bad = error_lines(log_path)
    print(f"server log {log_path}: {len(bad)} error/traceback lines")
    for line in bad[:20]:
        print("  ", line[:300])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--connections", type=int, default=6, help="fuzzed connections at once (versions 1, 2, 3, …)")
    p.add_argument("--handshake-share", type=float, default=0.01, help="share of inputs that are garbage handshakes")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log", default="", help="keep the server's log here (default: a temporary file)")
    asyncio.run(main(p.parse_args()))
