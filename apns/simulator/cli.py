"""`python -m apns.simulator`: run the simulator standalone (for the demo, a phone-less dev setup, benchmarks).

Prints one JSON line `{"port", "host", "ca_file", "tls"}` once listening, and a summary line on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from apns.simulator.rules import SimulatorKey
from apns.simulator.server import ApnsSimulator


def _load_keys(args: argparse.Namespace) -> list[SimulatorKey]:
    from apns.jwt import ProviderKey, generate_test_key

    topics = frozenset(args.topic) if args.topic else None
    if args.public_key:
        return [SimulatorKey(args.key_id, args.team_id, Path(args.public_key).read_bytes(), topics)]
    if args.p8:
        key = ProviderKey.from_file(args.p8, args.key_id, args.team_id)
    else:
        key = generate_test_key(args.key_id, args.team_id)
        out = Path(args.generate_key_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        p8 = out / f"AuthKey_{key.key_id}.p8"
        p8.write_bytes(key.key_pem)
        p8.chmod(0o600)
        print(json.dumps({"generated_key": str(p8), "key_id": key.key_id, "team_id": key.team_id}))
    return [SimulatorKey.from_provider_key(key, topics)]


async def _serve(args: argparse.Namespace) -> None:
    import signal

    sim = ApnsSimulator(
        _load_keys(args),
        host=args.host,
        port=args.port,
        tls=not args.h2c,
        max_streams=args.max_streams,
        connection_window=args.connection_window,
        record=not args.no_record,
    )
    await sim.start()
    ca_file = sim.ca_file
    if args.ca_out and sim.ca_file:
        await asyncio.to_thread(Path(args.ca_out).write_bytes, sim.ca_pem)
        ca_file = args.ca_out
    print(json.dumps({"port": sim.port, "host": args.host, "ca_file": ca_file, "tls": not args.h2c}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(json.dumps({"accepted": sim.accepted, "replies": sim.replies}), flush=True)
    await sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m apns.simulator", description="strict local APNs simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2197, help="0 picks a free port (printed)")
    p.add_argument("--h2c", action="store_true", help="cleartext HTTP/2 instead of TLS")
    p.add_argument("--p8", help="trust this .p8 key (its public half)")
    p.add_argument("--public-key", help="trust this EC public key (PEM)")
    p.add_argument("--key-id", default="TESTKEY001")
    p.add_argument("--team-id", default="TESTTEAM01")
    p.add_argument("--topic", action="append", help="allowed topic (repeatable; default any)")
    p.add_argument("--generate-key-dir", help="where to write a generated .p8 when no key is given")
    p.add_argument("--max-streams", type=int, default=1000)
    p.add_argument("--connection-window", type=int, default=1 << 24, help="bytes (HTTP/2 default 65535)")
    p.add_argument("--no-record", action="store_true", help="count pushes without keeping them")
    p.add_argument("--ca-out", help="also write the CA certificate here")
    args = p.parse_args(argv)
    asyncio.run(_serve(args))
