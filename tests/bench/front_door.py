"""What one client can make the server spend (issue 16.2, 16.4; run by hand, prints medians).

Starts an embedded Redis and a real ntf-server in this process (TLS listener, handlers, store; provider
``AN``, which needs no APNs) with every front-door limit that exists in the code under test turned off,
then measures over one TLS connection of a simulated app:

  tnew     the round trip of a repeated TNEW for one device token after it has N registrations
           (N = 0, 500, 1000, 2000; each a TNEW with a new verify key), median of 200 repeats per N
  random   ERR AUTH answers per second (each a store lookup and a signature check) to TCHK with a random
           signature on an existing token, batches of 50 pipelined requests, for --seconds, reconnecting
           at once when the server closes; median over 5 runs. With --keep-command-budget the command
           budget and the close after server.max_auth_failures stay in force (defaults)

    .venv/bin/python tests/bench/front_door.py
    .venv/bin/python tests/bench/front_door.py --skip-random
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.error_types import AUTH
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, Request, SimApp
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.transport import certs
from ntf_server.transport.blocks import ConnectionClosed

NS = (0, 500, 1000, 2000)
REPEATS = 200


def unlimited(section: Any, **wanted: Any) -> Any:
    """``section`` with the ``wanted`` settings that exist in the code under test (older code has fewer)."""
    names = {f.name for f in dataclasses.fields(section)}
    return dataclasses.replace(section, **{k: v for k, v in wanted.items() if k in names})


def config(cfg_dir: Path, redis_url: str, keep_command_budget: bool) -> Config:
    cfg = load_config(cfg_dir)
    reg = unlimited(cfg.registration, per_connection_per_min=0.0, per_ip_per_min=0.0, max_tokens_per_device=0)
    server = dataclasses.replace(cfg.server, port=0, bind="127.0.0.1")
    if not keep_command_budget:
        server = unlimited(server, commands_per_connection_per_min=0.0, commands_per_ip_per_min=0.0,
                           max_auth_failures=0)
    return dataclasses.replace(cfg, registration=reg, server=server,
                               redis=dataclasses.replace(cfg.redis, url=redis_url, key_prefix="fdbench:"))


def keys(app: SimApp) -> tuple[bytes, bytes]:
    return (crypto.encode_public_key(crypto.public_of(app.auth_key)),
            crypto.encode_public_key(app.dh_key.public_key()))


async def tnew_round_trips(client: NtfClient) -> None:
    device = P.DeviceToken(P.PushProvider.APNS_NULL, os.urandom(32).hex().encode())
    first = SimApp(device)
    assert isinstance(await first.register(client), P.IdTkn)
    have = 1
    for n in NS:
        while have < n:
            batch = [SimApp(device) for _ in range(min(50, n - have))]
            answers = await client.requests([Request(b"", P.TNew(device, *keys(a)), a.auth_key) for a in batch])
            assert all(isinstance(r, P.IdTkn) for _, r in answers), answers[0]
            have += len(batch)
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            assert isinstance(await first.register(client), P.IdTkn)
            times.append(time.perf_counter() - start)
        print(f"tnew: repeated TNEW after {have:5d} registrations of one device token: "
              f"median {statistics.median(times) * 1000:.2f} ms")


async def random_signatures(connect: Callable[[], Awaitable[NtfClient]], seconds: float) -> None:
    """Signature checks forced per second: answers ERR AUTH (each a lookup and a verification), with the
    client reconnecting at once whenever the server closes the connection."""
    client = await connect()
    app = SimApp(P.DeviceToken(P.PushProvider.APNS_NULL, os.urandom(32).hex().encode()))
    assert isinstance(await app.register(client), P.IdTkn)
    rates = []
    for _ in range(5):
        kinds: Counter[str] = Counter()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            reqs = [Request(app.token_id, P.TChk(), crypto.generate_ed25519()) for _ in range(50)]
            try:
                answers = await client.requests(reqs)
            except (ConnectionClosed, ConnectionError, TimeoutError):
                kinds["reconnects"] += 1
                client = await connect()
                continue
            kinds.update(str(r.error) if isinstance(r, P.Err) else type(r).__name__ for _, r in answers)
        elapsed = time.perf_counter() - start
        rates.append(kinds[str(AUTH)] / elapsed)
        print(f"random: {rates[-1]:.0f} ERR AUTH/s ({', '.join(f'{k}={v}' for k, v in sorted(kinds.items()))})")
    await client.close()
    print(f"random: median {statistics.median(rates):.0f} ERR AUTH answers/s from one client")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = await redis.start()
        try:
            assert cli.main(["--config-dir", f"{tmp}/cfg", "init", "--host", "localhost"]) == 0
            cfg = config(Path(f"{tmp}/cfg"), url, args.keep_command_budget)
            server = NtfServer(cfg)
            await server.start()
            key_hash = certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file))
            try:
                if not args.skip_tnew:
                    client = await NtfClient.connect("127.0.0.1", server.port, key_hash)
                    await tnew_round_trips(client)
                    await client.close()
                if not args.skip_random:
                    await random_signatures(lambda: NtfClient.connect("127.0.0.1", server.port, key_hash),
                                            args.seconds)
            finally:
                await server.stop()
        finally:
            await redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--skip-tnew", action="store_true")
    parser.add_argument("--skip-random", action="store_true")
    parser.add_argument("--keep-command-budget", action="store_true",
                        help="leave the per-connection command budget and the AUTH-failure close in force")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
