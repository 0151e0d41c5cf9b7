"""Shared by resubscribe.py and nmsg_pipeline.py: SMP stand-ins in their own processes, a bulk store load,
and the ntf-server side run as a child process (so its CPU and peak RSS are its own).

Stand-in ``j`` of a run is ``python -m ntf_server.sim.smp_server --queues n --seed <prefix>-j``; the loader
derives the same notifier keys (``smp_load.seeded_queue``) and stores one subscription per queue through
``RedisStore.create_subscription``, many calls in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer
from ntf_server.sim.smp_load import seeded_key_der
from ntf_server.store.records import TOKEN_ACTIVE, PushProvider, TokenRecord, day_of
from ntf_server.store.redis import RedisStore

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across ``execve``, so a child
    started from a big parent (vfork) reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_of(pids: Sequence[int]) -> float:
    return sum(proc_cpu_s(p) for p in pids)


@dataclass
class StandIn:
    proc: subprocess.Popen[str]
    address: SMPServer
    seed: bytes
    queues: int


async def start_standins(count: int, queues_each: int, prefix: str, *extra: str) -> list[StandIn]:
    """Start ``count`` stand-ins at once; returns when every one listens (its queues created)."""
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started before anything is measured
            [sys.executable, "-m", "ntf_server.sim.smp_server", "--queues", str(queues_each),
             "--seed", f"{prefix}-{j}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for j in range(count)
    ]
    out = []
    for j, p in enumerate(procs):
        assert p.stdout is not None
        line = await asyncio.to_thread(p.stdout.readline)
        if not line.startswith("started "):
            raise RuntimeError(f"stand-in {j} did not start: {line!r}")
        out.append(StandIn(p, SMPServer.from_uri(line.split()[1]), f"{prefix}-{j}".encode(), queues_each))
    return out


def stop_all(procs: Sequence[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def make_tokens(n: int, provider: PushProvider = PushProvider.APNS_TEST) -> list[TokenRecord]:
    day = day_of(time.time())
    return [TokenRecord(
        token_id=secrets.token_bytes(24), provider=provider, device_token=secrets.token_hex(32).encode(),
        status=TOKEN_ACTIVE, verify_key=b"\x30\x2a" + secrets.token_bytes(42),
        dh_public=b"\x30\x2a" + secrets.token_bytes(42), dh_private=b"\x30\x2e" + secrets.token_bytes(46),
        dh_secret=secrets.token_bytes(32), reg_code=secrets.token_bytes(32), last_used_day=day) for _ in range(n)]


async def load(store: RedisStore, standins: Sequence[StandIn], tokens: Sequence[TokenRecord],
               concurrency: int = 64, keys_as_sent: bool = False) -> tuple[float, float]:
    """Tokens and one subscription per stand-in queue (queue i of every stand-in → token i mod T), the
    notifier key stored as SNEW stores it (``crypto.notifier_key_for_storage``), or with ``keys_as_sent`` as
    the app sends it (PKCS#8 v0: records stored before that form, or imported from the Haskell server).
    Returns (token seconds, subscription seconds)."""
    t0 = time.perf_counter()
    await _each(concurrency, [store.create_token(replace(t, status=TOKEN_ACTIVE)) for t in tokens])
    t1 = time.perf_counter()

    async def one(s: StandIn, i: int) -> None:
        nid, key = seeded_key_der(s.seed, i)
        if not keys_as_sent:
            key = crypto.notifier_key_for_storage(key)
        created, _ = await store.create_subscription(tokens[i % len(tokens)].token_id, s.address, nid, key)
        assert created.name == "CREATED", created

    jobs = ((s, i) for i in range(max(s.queues for s in standins)) for s in standins if i < s.queues)
    total = sum(s.queues for s in standins)
    done = 0

    async def worker() -> None:
        nonlocal done
        for s, i in jobs:
            await one(s, i)
            done += 1
            if done % 100_000 == 0:
                dt = time.perf_counter() - t1
                print(f"  … loaded {done:,}/{total:,} ({done / dt:,.0f}/s)", flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return t1 - t0, time.perf_counter() - t1


async def _each(concurrency: int, coros: Sequence[Any]) -> None:
    it = iter(coros)

    async def worker() -> None:
        for c in it:
            await c

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Child:
    """The ntf-server side in its own process, talking JSON lines on stdout."""

    def __init__(self, argv: Sequence[str], *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.PIPE if stdin else None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    async def message(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                raise RuntimeError(f"ntf-server child ended (exit {self.proc.wait()})")
            if line.startswith("{"):
                msg: dict[str, Any] = json.loads(line)
                return msg
            print("  child:", line.rstrip(), flush=True)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def ratios(med: Mapping[str, float], base: Mapping[str, float], labels: Mapping[str, str]) -> str:
    """``label med/base`` for each key of ``labels``, comma-separated (medians of one setting against another)."""
    return ", ".join(f"{label} {med[key] / base[key]:.2f}" for key, label in labels.items())
