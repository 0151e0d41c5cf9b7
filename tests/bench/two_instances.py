"""Two instances on one Redis, kill -9 of one under steady NMSG traffic (issue 18's goal): how long until its
SMP servers' queues are subscribed by the other, notifications lost, pushes sent twice, and whether any queue
was ever subscribed by two connections at once while both were alive.

Each run: a fresh Redis data set, ``--stand-ins`` SMP stand-ins with ``--queues`` queues in all, two
``ntf-server start`` processes from copies of one configuration (parity mode: one push per NMSG; the lease
settings are the defaults unless given), an APNs simulator. NMSGs go at ``--rate`` per second to the queues in
turn from a few seconds before the kill until ``--after-s`` after it; then the pushes are counted at the
simulator and matched to the NMSGs by their notifications (decrypted as the app would):

* takeover: from the kill until every queue of the dead instance's SMP servers has a subscriber again;
* lost: NMSGs no push carried. The SMP server hands an NMSG to the subscribed connection and forgets it, so
  the ones in flight to the dead process (in its socket buffers, or received and not yet stored) are gone with
  it, in SMP as here: counted apart ("at the kill"), they are not scheduled work;
* sent twice: a notification that was the cause (last item) of two pushes;
* two connections at once: NSUBs the stand-ins answered while another open connection held the queue (it
  got END), counted by the stand-ins over the whole run (``SmpServerCore.taken_from_live``).

Run: ``.venv/bin/python tests/bench/two_instances.py --runs 3`` (about 2 minutes with the default leases).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from instances import Device, Pair, two_instances, until, verification_free
from server_process import Settings

from ntf_server.sim.smp_server import SmpServerStandIn
from ntf_server.store.embedded import EmbeddedRedis

AT_KILL_S = 0.5  # NMSGs handed to the dead process this shortly before the kill may be in its buffers


async def one_run(directory: Path, redis_url: str, args: argparse.Namespace) -> dict[str, float]:
    settings: Settings = {("push", "hidden_per_hour"): 0.0,
                          ("subscriber", "lease_ttl_s"): args.lease_ttl_s,
                          ("subscriber", "lease_renew_s"): args.lease_renew_s,
                          ("push", "claim_lease_s"): args.claim_lease_s}
    stand_ins = [SmpServerStandIn() for _ in range(args.stand_ins)]
    for s in stand_ins:
        await s.start()
    try:
        async with two_instances(directory, redis_url, settings) as pair:
            per_device = max(1, args.queues // args.devices)
            devices = await pair.register(args.devices, stand_ins, queues=per_device)
            await until(lambda: all(s.connections == 1 for s in stand_ins), 60, "one connection per stand-in")
            return await _measure(pair, devices, stand_ins, args)
    finally:
        for s in stand_ins:
            await s.close()


async def _measure(pair: Pair, devices: list[Device], stand_ins: list[SmpServerStandIn],
                   args: argparse.Namespace) -> dict[str, float]:
    owners = Counter(await pair.lease_owners())
    dead_name = "a" if owners["a"] >= owners["b"] else "b"
    dead = pair.process(dead_name)
    # which stand-in each instance subscribes: the dead one's are those that lose their connection
    queues = [(i, smp, creds) for i, d in enumerate(devices) for smp, creds in d.queues]
    sent: list[tuple[int, bytes, float, SmpServerStandIn]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        k = 0
        while not stop.is_set():
            i, smp, creds = queues[k % len(queues)]
            msg = b"m%07d" % k
            smp.notify(creds.notifier_id, msg, 1_700_000_000 + k)
            sent.append((i, msg, time.time(), smp))
            k += 1
            await asyncio.sleep(1 / args.rate)

    task = asyncio.create_task(traffic())
    await asyncio.sleep(args.before_s)
    taken_before = sum(s.core.taken_from_live for s in stand_ins)
    connected = [s.connections for s in stand_ins]
    killed_at = time.time()
    await dead.kill9()
    t0 = time.monotonic()
    await until(lambda: sum(s.connections for s in stand_ins) < sum(connected), 30, "the dead one's links closed")
    orphans = [s for s, n in zip(stand_ins, connected, strict=True) if n and s.connections == 0]
    took = await until(lambda: all(s.connections == 1 for s in stand_ins)
                       and all(smp.subscriber_of(c.notifier_id) is not None for _, smp, c in queues),
                       args.lease_ttl_s + 60, "taken over")
    took = time.monotonic() - t0
    await asyncio.sleep(max(0.0, args.after_s - took))
    stop.set()
    await task
    await until(pair.idle, 120, "nothing due")
    await asyncio.sleep(1.0)  # the last pushes' answers (the survivor is idle: nothing more can come)

    carried: set[tuple[int, bytes]] = set()
    causes: Counter[tuple[int, bytes]] = Counter()
    for i, d in enumerate(devices):
        for body in verification_free(pair.pushes(d)):
            ids = d.message_ids(body)
            carried.update((i, m) for m in ids)
            if ids:
                causes[(i, ids[-1])] += 1
    lost = [(i, m, t, smp) for i, m, t, smp in sent if (i, m) not in carried]
    at_kill = [x for x in lost if x[3] in orphans and killed_at - AT_KILL_S <= x[2] <= killed_at]
    return {"takeover_s": took, "sent": len(sent), "lost": len(lost), "lost_at_kill": len(at_kill),
            "twice": sum(n - 1 for n in causes.values()), "two_connections": taken_before,
            "two_connections_after": sum(s.core.taken_from_live for s in stand_ins) - taken_before,
            "dead_servers": len(orphans)}


async def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedRedis(Path(tmp) / "redis")
        url = await store.start()
        try:
            for run in range(args.runs):
                directory = Path(tmp) / f"run{run}"
                directory.mkdir()
                r = await one_run(directory, url, args)
                results.append(r)
                print(f"run {run + 1}: kill -9 of the instance with {r['dead_servers']:.0f} of {args.stand_ins} SMP "
                      f"servers: its queues subscribed by the other after {r['takeover_s']:.2f} s; "
                      f"{r['sent']:.0f} NMSGs, lost {r['lost']:.0f} ({r['lost_at_kill']:.0f} of them in flight to "
                      f"the dead process at the kill), pushes sent twice {r['twice']:.0f}, queues subscribed by "
                      f"two connections at once: {r['two_connections']:.0f} while both alive, "
                      f"{r['two_connections_after']:.0f} after", flush=True)
        finally:
            await store.stop()
    took = [r["takeover_s"] for r in results]
    print(f"\n{args.runs} runs, lease_ttl_s {args.lease_ttl_s} / lease_renew_s {args.lease_renew_s}, "
          f"{args.queues} queues on {args.stand_ins} SMP servers, {args.rate:g} NMSG/s: takeover median "
          f"{statistics.median(took):.2f} s (min {min(took):.2f}, max {max(took):.2f}; goal <= 30 s); lost "
          f"{sum(r['lost'] for r in results):.0f} (in flight to the dead process at the kill: "
          f"{sum(r['lost_at_kill'] for r in results):.0f}); sent twice {sum(r['twice'] for r in results):.0f}; "
          f"two connections at once while both alive {sum(r['two_connections'] for r in results):.0f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--stand-ins", type=int, default=8)
    p.add_argument("--queues", type=int, default=400)
    p.add_argument("--devices", type=int, default=40)
    p.add_argument("--rate", type=float, default=50.0, help="NMSGs per second, to the queues in turn")
    p.add_argument("--before-s", type=float, default=5.0, help="traffic before the kill")
    p.add_argument("--after-s", type=float, default=25.0, help="traffic after the kill (at least until the takeover)")
    p.add_argument("--lease-ttl-s", type=float, default=15.0)
    p.add_argument("--lease-renew-s", type=float, default=3.0)
    p.add_argument("--claim-lease-s", type=float, default=30.0)
    asyncio.run(main(p.parse_args()))
