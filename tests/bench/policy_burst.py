"""What a burst of 20 messages in one minute becomes under each overflow mode (issue 10's figures).

Run by hand, not collected by pytest:

    .venv/bin/python tests/bench/policy_burst.py [--messages 20] [--over-s 60] [--hidden-per-hour 3] [--burst 3]

The real stack in one process: embedded Redis, the strict APNs simulator, an NTF server, a simulated app
(registered, verified, one SMP queue per message). Messages arrive evenly over ``--over-s`` seconds of a fake
clock (the budget's clock; nothing waits), each stored as an NMSG and handed to the push pipeline as the
subscriber pool does. Then the fake clock runs on for two hours so deferred pushes are sent. Per mode:
pushes at the simulator by kind and time, what the app decrypts (notifications carried by at least one
push), and the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package

from helpers.e2e_env import init_config

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.push.policy import PolicySettings
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import Notice
from ntf_server.transport import certs

SMP = SMPServer(("smp.example.com",), "5223", b"\x05" * 32)
T0 = 1_900_000_000.0


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


async def one_mode(server: NtfServer, sim: ApnsSimulator, key_hash: bytes, policy: dict[str, object],
                   messages: int, over_s: float) -> dict[str, object]:
    clock = Clock()
    assert server.push is not None and server.push.hidden is not None
    server.push.hidden.clock = clock
    await PolicyStore(server.store.dataset).put(PolicySettings.from_json(policy))
    before = server.stats.snapshot()
    client = await NtfClient.connect("127.0.0.1", server.port, key_hash)
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
    await app.register(client)
    device = app.device_token.token.decode()
    await app.token_command(client, P.TVfy(app.verification_code((await sim.next_push(device)).body)))
    nids = [os.urandom(24) for _ in range(messages)]
    for nid in nids:
        await app.subscribe(client, SMP, nid, crypto.generate_ed25519())
    arrivals: dict[int, float] = {}  # push index at the simulator -> fake time it was sent
    for i, nid in enumerate(nids):
        clock.now = T0 + i * over_s / messages
        await server.push.accept(SMP, [Notice(SMP, nid, int(clock.now * 1000), os.urandom(24), os.urandom(144))])
        await server.push.settle()
        for k in range(len(arrivals), len(sim.pushes(device)) - 1):
            arrivals[k] = clock.now
    for minute in range(1, 121):  # two hours, a minute at a time: the scheduler sends what is due
        clock.now = T0 + over_s + 60 * minute
        await asyncio.sleep(0.06)
        for k in range(len(arrivals), len(sim.pushes(device)) - 1):
            arrivals[k] = clock.now
    pushes = sim.pushes(device)[1:]  # the first is the verification push
    carried = {item for p in pushes for item in app.message_list(p.body)}
    after = server.stats.snapshot()
    delta = {k: after[k] - before[k] for k in ("ntf_hidden", "ntf_alert", "ntf_deferred", "ntf_deferred_sent",
                                                "ntf_dropped", "ntf_delivered")}
    await client.close()
    return {"pushes": len(pushes), "background": sum(p.push_type == "background" for p in pushes),
            "alert": sum(p.push_type == "alert" for p in pushes),
            "times": [round(arrivals[k] - T0) for k in range(len(pushes))],
            "carried": len(carried), **delta}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--over-s", type=float, default=60.0)
    ap.add_argument("--hidden-per-hour", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        redis = EmbeddedRedis(Path(d) / "redis")
        url = await redis.start()
        key = generate_test_key("KEYID00001", "TEAMID0001")
        p8 = Path(d) / "AuthKey.p8"
        p8.write_bytes(key.key_pem)
        sim = ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1)
        await sim.start()
        cfg = init_config(Path(d) / "cfg", url, sim, p8, key.key_id, key.team_id)
        cfg = dataclasses.replace(cfg, push=dataclasses.replace(cfg.push, defer_scan_s=0.02))
        server = NtfServer(cfg)
        await server.start()
        key_hash = certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file))
        try:
            print(f"{args.messages} messages over {args.over_s:g} s, budget {args.hidden_per_hour:g}/h burst "
                  f"{args.burst}; pushes sent within the following 2 h (fake clock)\n")
            print(f"{'mode':<8} {'pushes':>6} {'bg':>3} {'alert':>5} {'dropped':>7} {'deferred':>8} "
                  f"{'carried':>7}  push times (s after the first message)")
            modes = [("parity", {"hidden_per_hour": 0})] + [
                (m, {"hidden_per_hour": args.hidden_per_hour, "burst": args.burst, "overflow": m})
                for m in ("alert", "defer", "drop")]
            for name, policy in modes:
                r = await one_mode(server, sim, key_hash, policy, args.messages, args.over_s)
                print(f"{name:<8} {r['pushes']:>6} {r['background']:>3} {r['alert']:>5} {r['ntf_dropped']:>7} "
                      f"{r['ntf_deferred']:>8} {r['carried']:>4}/{args.messages:<2}  {r['times']}")
        finally:
            await server.stop()
            await sim.stop()
            await redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
