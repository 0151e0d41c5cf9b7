"""Soak (issue 16): mixed load on an ``ntf-server start`` child process for a while (default 10 minutes):
registrations (TNEW, TVFY from the verification push) and subscriptions (SNEW to a real SMP stand-in) that
replace the oldest app (TDEL), NMSGs from the stand-in to live queues (pushed through the APNs simulator),
TCHK and PING. The number of live apps stays constant, so the server's RSS, open fds and Redis memory
should stay flat after warm-up; they are sampled and compared (the first third against the last third).

    .venv/bin/python tests/bench/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

import redis.asyncio
from load import verified_app
from server_process import UNLIMITED_REGISTRATION, ServerProcess, error_lines, server_world

from apns.simulator import ApnsSimulator
from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import SmpServerStandIn

HOST = "127.0.0.1"


@dataclass
class Live:
    app: SimApp
    notifier_id: bytes


@dataclass
class Soak:
    apps: collections.deque[Live] = field(default_factory=collections.deque)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: list[tuple[float, int, int, int, int]] = field(default_factory=list)  # t, rss, fds, Redis used, data


async def new_app(client: NtfClient, sim: ApnsSimulator, smp: SmpServerStandIn, soak: Soak) -> None:
    app = await verified_app(client, sim)
    key = crypto.generate_ed25519()
    creds, _ = smp.create_queue(crypto.public_of(key))
    assert isinstance(await app.subscribe(client, smp.address, creds.notifier_id, key), P.IdSub)
    soak.apps.append(Live(app, creds.notifier_id))
    soak.counts["registered+subscribed"] += 1


async def churn(server: ServerProcess, sim: ApnsSimulator, smp: SmpServerStandIn, soak: Soak, live: int,
                per_s: float, until: float) -> None:
    client = await NtfClient.connect(HOST, server.port, server.key_hash)
    while len(soak.apps) < live:
        await new_app(client, sim, smp, soak)
    while time.monotonic() < until:
        t = time.monotonic()
        await new_app(client, sim, smp, soak)
        old = soak.apps.popleft()
        assert await old.app.token_command(client, P.TDel()) == P.Ok()
        soak.counts["deleted"] += 1
        assert isinstance(await soak.apps[-1].app.token_command(client, P.TChk()), P.Tkn)
        assert (await client.request(b"", P.Ping()))[1] == P.Pong()
        await asyncio.sleep(max(0.0, 1 / per_s - (time.monotonic() - t)))
    await client.close()


async def messages(smp: SmpServerStandIn, soak: Soak, per_s: float, until: float) -> None:
    rng = random.Random(1)
    while time.monotonic() < until:
        if soak.apps:
            smp.notify(rng.choice(soak.apps).notifier_id, os.urandom(24), int(time.time()))
            soak.counts["nmsg"] += 1
        await asyncio.sleep(1 / per_s)


async def sample(server: ServerProcess, redis_url: str, soak: Soak, every_s: float, until: float) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    t0 = time.monotonic()
    while time.monotonic() < until:
        rss, fds = server.resources()
        info = await client.info("memory")
        soak.samples.append((time.monotonic() - t0, rss, fds, int(info["used_memory"]),
                             int(info["used_memory_dataset"])))
        await asyncio.sleep(every_s)
    await client.aclose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        async with SmpServerStandIn() as smp, server_world(tmp, UNLIMITED_REGISTRATION) as world:
            server, sim, soak = world.server, world.sim, Soak()
            t0 = time.monotonic()
            until = t0 + args.minutes * 60
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sample(server, world.redis_url, soak, args.sample_s, until))
                tg.create_task(messages(smp, soak, args.nmsg_per_s, until))
                for _ in range(args.churners):
                    tg.create_task(churn(server, sim, smp, soak, args.live // args.churners,
                                         args.churn_per_s / args.churners, until))
            soak.counts["pushes accepted by APNs"] = sim.accepted
        report(soak, time.monotonic() - t0, tmp / "server.log")


def report(soak: Soak, elapsed: float, log_path: Path) -> None:
    print(f"soak {elapsed / 60:.1f} min: {dict(soak.counts)}")
    print("t_s rss_MiB fds redis_MiB redis_dataset_MiB")
    step = max(1, len(soak.samples) // 15)
    for t, rss, fds, used, data in soak.samples[::step] + soak.samples[-1:]:
        print(f"{t:5.0f} {rss / 2**20:7.1f} {fds:4} {used / 2**20:7.1f} {data / 2**20:7.2f}")
    third = max(1, len(soak.samples) // 3)
    first, last = soak.samples[:third], soak.samples[-third:]
    for name, i, unit in (("RSS", 1, 2**20), ("fds", 2, 1), ("Redis used_memory", 3, 2**20),
                          ("Redis used_memory_dataset", 4, 2**20)):
        a, b = statistics.median(s[i] for s in first), statistics.median(s[i] for s in last)
        print(f"{name}: median of the first third {a / unit:.1f}, of the last third {b / unit:.1f} "
              f"({(b - a) / a * 100 if a else 0:+.1f} %)")
    bad = error_lines(log_path)
    print(f"server log: {len(bad)} error/traceback lines")
    for line in bad[:20]:
        print("  ", line[:300])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--live", type=int, default=400, help="apps registered and subscribed at any time")
    p.add_argument("--churners", type=int, default=4, help="connections replacing apps")
    p.add_argument("--churn-per-s", type=float, default=20.0, help="apps replaced per second (all churners)")
    p.add_argument("--nmsg-per-s", type=float, default=100.0, help="NMSGs per second from the SMP stand-in")
    p.add_argument("--sample-s", type=float, default=10.0)
    asyncio.run(main(p.parse_args()))
