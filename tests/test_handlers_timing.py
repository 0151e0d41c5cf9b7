"""`ERR AUTH` takes as long for an existing id with a wrong signature as for an id that does not exist
(STYLE 4, spec §2.4 item 4; issue 8 item 4).

Drives `NtfHandlers.handle` with a real `RedisStore` (no TLS, so the network's noise does not hide a
difference; tests/bench/auth_timing.py measures the same over the wire). Classes are interleaved in shuffled
rounds; the verdict compares medians overall and the sign of the difference in 20 chunks of rounds: the old
code was 30-60 % slower for existing ids, in every chunk.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from helpers.timing_stats import KNOWN, UNKNOWN, Sample, analyse

from ntf_server.handlers import NtfHandlers
from ntf_server.interfaces import NullSink
from ntf_server.observability.stats import Stats
from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.error_types import AUTH
from ntf_server.protocol.framing import RawTransmission, THParams, for_auth
from ntf_server.store.records import TOKEN_ACTIVE, PushProvider, TokenRecord, day_of
from ntf_server.store.redis import RedisStore

SMP = SMPServer(("smp.example.net",), "5223", b"\x42" * 32)
PARAMS = THParams.ntf(3, os.urandom(32))
ROUNDS = 300
CHUNKS = 20
MAX_DIFF_PCT = 5.0


class NoPushes:
    """Nothing is pushed in this test: every request fails its auth check."""

    async def send_verification(self, token: TokenRecord) -> None:
        raise AssertionError("no request here may succeed")


@dataclass
class Fixture:
    tids: list[bytes]
    sids: list[bytes]
    wrong: crypto.PrivateAuthKey  # the attacker's key, of the same type as the registered ones


def new_key(kind: str) -> crypto.PrivateAuthKey:
    return {"ed25519": crypto.generate_ed25519, "ed448": Ed448PrivateKey.generate, "x25519": crypto.generate_x25519}[
        kind
    ]()


async def populate(store: RedisStore, kind: str, n: int) -> Fixture:
    tids, sids = [], []
    for _ in range(n):
        server_dh = crypto.generate_x25519()
        rec = TokenRecord(
            token_id=os.urandom(24),
            provider=PushProvider.APNS_PROD,
            device_token=os.urandom(32).hex().encode(),
            status=TOKEN_ACTIVE,
            verify_key=crypto.encode_public_key(crypto.public_of(new_key(kind))),
            dh_public=crypto.encode_public_key(server_dh.public_key()),
            dh_private=crypto.encode_private_key(server_dh),
            dh_secret=os.urandom(32),
            reg_code=os.urandom(32),
            last_used_day=day_of(time.time()),
        )
        await store.create_token(rec)
        key = crypto.encode_private_key(crypto.generate_ed25519())
        _, sub = await store.create_subscription(rec.token_id, SMP, os.urandom(24), key)
        assert sub is not None
        tids.append(rec.token_id)
        sids.append(sub.sub_id)
    return Fixture(tids, sids, new_key(kind))


def request(cls: str, known: bool, f: Fixture, server_dh: crypto.X25519PrivateKey) -> P.NtfRequest:
    entity: bytes
    cmd: P.NtfCommand
    if cls == "SCHK":
        entity, cmd = (random.choice(f.sids) if known else os.urandom(24)), P.SChk()
    elif cls == "SNEW":
        tid = random.choice(f.tids) if known else os.urandom(24)
        entity, cmd = b"", P.SNew(tid, SMP, os.urandom(24), crypto.encode_private_key(crypto.generate_ed25519()))
    else:  # TCHK with Ed25519, Ed448 or X25519 (authenticator) keys
        entity, cmd = (random.choice(f.tids) if known else os.urandom(24)), P.TChk()
    corr = os.urandom(24)
    command = P.encode_command(cmd)
    authorized, _ = for_auth(PARAMS, corr, entity, command)
    auth = crypto.client_authorize(f.wrong, authorized, corr, server_dh.public_key())
    return P.NtfRequest(RawTransmission(auth, None, authorized, b"", corr, entity, command), cmd)


async def test_auth_failure_takes_as_long_for_existing_and_unknown_ids(store: RedisStore) -> None:
    handlers = NtfHandlers(store, NoPushes(), Stats(), NullSink())
    server_dh = crypto.generate_x25519()
    classes = {"TCHK": "ed25519", "TCHK448": "ed448", "TCHKX": "x25519", "SCHK": "ed25519", "SNEW": "ed25519"}
    fixtures = {cls: await populate(store, kind, 20) for cls, kind in classes.items()}
    pairs = [(cls, kind) for cls in classes for kind in (KNOWN, UNKNOWN)]
    samples = []
    for rnd in range(-20, ROUNDS):  # the first 20 rounds warm up caches and are not counted
        random.shuffle(pairs)
        for cls, kind in pairs:
            req = request(cls, kind == KNOWN, fixtures[cls], server_dh)
            t0 = time.perf_counter()
            resp = await handlers.handle(req, server_dh)
            elapsed = time.perf_counter() - t0
            assert resp == P.Err(AUTH)
            if rnd >= 0:
                samples.append(Sample(rnd, cls, kind, elapsed))
    results = analyse(samples, list(classes), CHUNKS)
    report = "\n".join(r.line() for r in results)
    print(report)
    for r in results:
        assert abs(r.diff_pct) < MAX_DIFF_PCT and not r.one_sided, report
