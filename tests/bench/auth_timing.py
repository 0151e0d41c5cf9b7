"""Does the time of an `ERR AUTH` answer tell whether an id exists? (issue 8 item 4; run by hand)

Starts an embedded Redis and a real ntf-server in a child process (TLS, handshake, listener, handlers,
store — as `ntf-server start` runs them), fills the store with ACTIVE tokens that have subscriptions, then
sends, over one pinned TLS connection of the simulated app, interleaved requests of three classes, each
signed with a key that is not the registered one:

  TCHK  entity = an existing token id          vs  an unknown token id
  SCHK  entity = an existing subscription id   vs  an unknown subscription id
  SNEW  token id = an existing token           vs  an unknown token (same SMP server, new notifier id)

Every answer is `ERR AUTH`. Prints, per class, the median round trip for each kind, the difference in µs
and %, and in how many chunks of consecutive rounds the existing id was the slower one.

    .venv/bin/python tests/bench/auth_timing.py                  # 3000 rounds (18,000 requests)
    .venv/bin/python tests/bench/auth_timing.py --rounds 1000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.timing_stats import KNOWN, UNKNOWN, Sample, analyse

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH
from ntf_server.server import NtfServer
from ntf_server.sim.device import NtfClient, Request
from ntf_server.store.atrest import load_or_create_store_key
from ntf_server.store.embedded import EmbeddedRedis
from ntf_server.store.records import TOKEN_ACTIVE, PushProvider, TokenRecord, day_of
from ntf_server.store.redis import RedisStore
from ntf_server.transport import certs

CLASSES = ("TCHK", "SCHK", "SNEW")
SMP = SMPServer(("smp.example.net",), "5223", b"\x42" * 32)
PREFIX = "authbench:"


def server_config(cfg_dir: Path, redis_url: str) -> Config:
    cfg = load_config(cfg_dir)
    return dataclasses.replace(
        cfg,
        redis=dataclasses.replace(cfg.redis, url=redis_url, key_prefix=PREFIX),
        server=dataclasses.replace(cfg.server, port=0, bind="127.0.0.1"),
    )


def serve_child(cfg_dir: Path, redis_url: str, ports: multiprocessing.Queue[int]) -> None:
    async def main() -> None:
        server = NtfServer(server_config(cfg_dir, redis_url))
        await server.start()
        ports.put(server.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def notifier_key() -> bytes:
    return crypto.encode_private_key(crypto.generate_ed25519())


async def populate(store: RedisStore, n: int) -> tuple[list[bytes], list[bytes]]:
    """n ACTIVE tokens with real Ed25519 verify keys, one subscription each: (token ids, subscription ids)."""
    tids, sids = [], []
    for _ in range(n):
        server_dh = crypto.generate_x25519()
        rec = TokenRecord(
            token_id=os.urandom(24),
            provider=PushProvider.APNS_PROD,
            device_token=os.urandom(32).hex().encode(),
            status=TOKEN_ACTIVE,
            verify_key=crypto.encode_public_key(crypto.generate_ed25519().public_key()),
            dh_public=crypto.encode_public_key(server_dh.public_key()),
            dh_private=crypto.encode_private_key(server_dh),
            dh_secret=os.urandom(32),
            reg_code=os.urandom(32),
            last_used_day=day_of(time.time()),
        )
        await store.create_token(rec)
        _, sub = await store.create_subscription(rec.token_id, SMP, os.urandom(24), notifier_key())
        assert sub is not None
        tids.append(rec.token_id)
        sids.append(sub.sub_id)
    return tids, sids


def request(cls: str, kind: str, tids: list[bytes], sids: list[bytes], nkey: bytes,
            wrong: crypto.PrivateAuthKey) -> Request:
    known = kind == KNOWN
    if cls == "TCHK":
        return Request(random.choice(tids) if known else os.urandom(24), P.TChk(), wrong)
    if cls == "SCHK":
        return Request(random.choice(sids) if known else os.urandom(24), P.SChk(), wrong)
    tid = random.choice(tids) if known else os.urandom(24)
    return Request(b"", P.SNew(tid, SMP, os.urandom(24), nkey), wrong)


async def measure(client: NtfClient, rounds: int, tids: list[bytes], sids: list[bytes]) -> list[Sample]:
    wrong = crypto.generate_ed25519()
    nkey = notifier_key()
    pairs = [(c, k) for c in CLASSES for k in (KNOWN, UNKNOWN)]
    samples = []
    for rnd in range(rounds):
        random.shuffle(pairs)
        for cls, kind in pairs:
            req = request(cls, kind, tids, sids, nkey, wrong)
            t0 = time.perf_counter()
            [(_, resp)] = await client.requests([req])
            elapsed = time.perf_counter() - t0
            if resp != P.Err(AUTH):
                raise SystemExit(f"{cls} {kind}: expected ERR AUTH, got {resp}")
            samples.append(Sample(rnd, cls, kind, elapsed))
    return samples


async def run(args: argparse.Namespace, work: Path) -> None:
    redis_srv = EmbeddedRedis(work / "redis")
    url = await redis_srv.start()
    child: multiprocessing.process.BaseProcess | None = None
    try:
        cfg_dir = work / "cfg"
        assert cli.main(["--config-dir", str(cfg_dir), "init", "--host", "localhost"]) == 0
        cfg = server_config(cfg_dir, url)
        store = await RedisStore.connect(url, load_or_create_store_key(cfg.store.key_file), prefix=PREFIX)
        tids, sids = await populate(store, args.tokens)
        await store.close()

        ctx = multiprocessing.get_context("spawn")
        ports: multiprocessing.Queue[int] = ctx.Queue()
        child = ctx.Process(target=serve_child, args=(cfg_dir, url, ports), daemon=True)
        child.start()
        port = ports.get(timeout=60)
        key_hash = certs.fingerprint(certs.read_ca_der(cfg.tls.ca_cert_file))
        client = await NtfClient.connect("127.0.0.1", port, key_hash)
        try:
            await measure(client, args.warmup, tids, sids)
            t0 = time.perf_counter()
            samples = await measure(client, args.rounds, tids, sids)
            took = time.perf_counter() - t0
        finally:
            await client.close()
        import ntf_server

        print(f"code: {Path(ntf_server.__file__).parent}")
        print(f"{len(samples)} requests over TLS in {took:.1f} s ({args.rounds} interleaved rounds, "
              f"{args.tokens} tokens/subscriptions, {args.chunks} chunks)")
        for r in analyse(samples, CLASSES, args.chunks):
            print(r.line())
    finally:
        if child is not None:
            child.terminate()
            child.join(10)
        await redis_srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--chunks", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
