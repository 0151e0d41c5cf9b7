"""The long hostile-SMP run (issue 16): an ``ntf-server start`` child process subscribed, through one app
each, to one hostile SMP server per attack of tests/reliability/hostile_smp.py (garbage and oversized
blocks, lying counts, unknown messages, NMSG floods, END storms, stalls, slowloris…), all at once, for
``--minutes``; meanwhile a bystander app on a well-behaved SMP stand-in gets a notification every few
seconds and each must be pushed. The server's RSS and fds are sampled; at the end: what the attackers sent,
the bystander's push latencies, and every error or traceback line of the server's log.

    .venv/bin/python tests/bench/hostile_smp_run.py --minutes 5 [--attacks nmsg-flood end-storm …]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from hostile_smp import Attack, HostileSmp
from load import verified_app
from server_process import error_lines, server_world

from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient
from ntf_server.sim.smp_server import SmpServerStandIn

HOST = "127.0.0.1"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hostile-smp-") as tmp_dir:
        tmp = Path(tmp_dir)
        hostiles = [HostileSmp(Attack(a), tmp / a) for a in args.attacks]
        async with SmpServerStandIn() as good, server_world(tmp, {}) as world:
            server, sim = world.server, world.sim
            client = await NtfClient.connect(HOST, server.port, server.key_hash)
            for h in hostiles:
                await h.start()
                victim, k = await verified_app(client, sim), crypto.generate_ed25519()
                assert isinstance(await victim.subscribe(client, h.address, h.create_queue(crypto.public_of(k)), k),
                                  P.IdSub)
            bystander, k = await verified_app(client, sim), crypto.generate_ed25519()
            creds, _ = good.create_queue(crypto.public_of(k))
            assert isinstance(await bystander.subscribe(client, good.address, creds.notifier_id, k), P.IdSub)
            samples, latencies = [], []
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < args.minutes * 60:
                    samples.append((time.monotonic() - t0, *server.resources()))
                    sent_at = time.monotonic()
                    good.notify(creds.notifier_id, os.urandom(24), int(time.time()))
                    await sim.next_push(bystander.device_token.token.decode(), timeout_s=60)
                    latencies.append(time.monotonic() - sent_at)
                    await asyncio.sleep(args.every_s)
            finally:
                await client.close()
                for h in hostiles:
                    await h.close()
        report(hostiles, samples, latencies, tmp / "server.log")


def report(hostiles: list[HostileSmp], samples: list[tuple[float, int, int]], latencies: list[float],
           log_path: Path) -> None:
    print(f"attacks ({sum(h.sent for h in hostiles):,} sent in all):")
    for h in hostiles:
        print(f"  {h.attack.value:15} {h.sent:9,} sent, {h.connections:4} connections "
              f"({h.connections_per_s():.2f}/s)")
    ms = sorted(x * 1000 for x in latencies)
    print(f"bystander: {len(ms)} notifications pushed, median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms")
    print("t_s rss_MiB fds")
    step = max(1, len(samples) // 12)
    for t, rss, fds in samples[::step] + samples[-1:]:
        print(f"{t:5.0f} {rss / 2**20:7.1f} {fds:4}")
    bad = error_lines(log_path)
    print(f"server log: {len(bad)} error/traceback lines")
    for line in bad[:20]:
        print("  ", line[:300])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--every-s", type=float, default=2.0, help="a bystander notification this often")
    p.add_argument("--attacks", nargs="+", default=[a.value for a in Attack], choices=[a.value for a in Attack],
                   help="one hostile SMP server for each (default: all at once)")
    asyncio.run(main(p.parse_args()))
