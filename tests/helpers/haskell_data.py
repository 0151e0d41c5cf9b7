"""A generated Haskell ntf-server database of realistic shape (spec §6.1): valid keys made with our crypto
helpers, every token and subscription status, several SMP servers (a preset host stored with its onion
host, an empty port, a service id), last notifications, and a known set of rows we cannot represent.
Loaded with COPY, so tens of thousands of rows take a second or two."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.importer.mapping import ERR_TEXT_NOTE, NtfRow, ServerRow, SubRow, TokenRow
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer, b64u_encode

TOKEN_STATUSES = ["NEW", "REGISTERED", "CONFIRMED", "INVALID", "INVALID,BAD", "INVALID,TOPIC", "INVALID,EXPIRED",
                  "INVALID,UNREGISTERED", "EXPIRED"]
SUB_STATUSES = ["NEW", "PENDING", "ACTIVE", "INACTIVE", "END", "DELETED", "AUTH", "SERVICE", "ERR SMP error QUOTA",
                "ERR NETWORK", "ERR PROXY BROKER (TRANSPORT TEBadBlock)"]
PROVIDERS = ["apns_prod", "apns_prod", "apns_prod", "apns_dev", "apns_test", "apns_null"]
DAY = 86400
NOTIFIER_KEYS = [crypto.encode_private_key(Ed25519PrivateKey.generate()) for _ in range(500)]


def ed25519_pair() -> tuple[bytes, bytes]:
    k = Ed25519PrivateKey.generate()
    return crypto.encode_private_key(k), crypto.encode_public_key(k.public_key())


@dataclass
class HaskellData:
    servers: list[ServerRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)
    subs: list[SubRow] = field(default_factory=list)
    ntfs: list[NtfRow] = field(default_factory=list)
    # what the importer must refuse, "what: reason" -> count (as writer.Counts.refused)
    refused: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def server_rows_by_id(self) -> dict[int, ServerRow]:
        return {s.smp_server_id: s for s in self.servers}


def server_row(sid: int, s: SMPServer, service_id: bytes | None = None, keyhash: bytes | None = None) -> ServerRow:
    return ServerRow(sid, ",".join(s.hosts), s.port, keyhash or b64u_encode(s.key_hash).encode(), service_id)


def token_row(rng: random.Random, *, status: str, provider: str, verify_key: bytes, cron: int = 0,
              now: int = 1_780_000_000) -> TokenRow:
    dh = X25519PrivateKey.generate()
    device = b"test_ntf_token" if provider == "apns_null" else os.urandom(32).hex().encode()
    sent = now - rng.randrange(3600) if cron and rng.random() < 0.5 else None
    updated = (now // DAY - rng.randrange(60)) * DAY if rng.random() < 0.9 else None
    return TokenRow(os.urandom(24), provider, device, status, verify_key, crypto.encode_private_key(dh),
                    os.urandom(32), os.urandom(32), cron, sent, updated)


def generate(n_tokens: int = 3000, subs_per_active: int = 9, seed: int = 7,
             extra_servers: list[SMPServer] | None = None) -> HaskellData:
    rng = random.Random(seed)
    d = HaskellData()
    preset = SMPServer(("smp8.simplex.im",), "", os.urandom(32)).normalized()  # stored with its onion host
    addrs = [preset, SMPServer(("smp1.example.com",), "5223", os.urandom(32)),
             SMPServer(("smp2.example.com", "smp2examplexxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"), "443",
                       os.urandom(32)),
             SMPServer(("10.1.2.3",), "", os.urandom(32)),
             SMPServer(("smp4.example.net",), "7001", os.urandom(32)), *(extra_servers or [])]
    for i, a in enumerate(addrs, 1):
        d.servers.append(server_row(i, a, service_id=os.urandom(16) if i == 2 else None))
    d.notes["SMP server service not carried: service id without its certificate and key"] += 1
    bad_server = len(addrs) + 1
    d.servers.append(ServerRow(bad_server, "smp.bad.example", "", b"not base64url!", None))
    d.refused["SMP server: SMP server address not valid: invalid base64url"] += 1
    good_servers = list(range(1, len(addrs) + 1))
    for i in range(n_tokens):
        status = "ACTIVE" if i % 10 < 7 else TOKEN_STATUSES[i % len(TOKEN_STATUSES)]
        _, vk = ed25519_pair()
        tok = token_row(rng, status=status, provider=PROVIDERS[i % len(PROVIDERS)], verify_key=vk,
                        cron=20 if i % 4 == 0 else 0)
        d.tokens.append(tok)
        if status == "ACTIVE" or (status.startswith("INVALID") and i % 3 == 0):
            _add_subs(d, rng, tok, subs_per_active + rng.randrange(-3, 4), good_servers)
    _add_bad_rows(d, rng, good_servers, bad_server)
    return d


def _add_subs(d: HaskellData, rng: random.Random, tok: TokenRow, n: int, servers: list[int]) -> None:
    base = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    for j in range(n):
        nkey = NOTIFIER_KEYS[rng.randrange(len(NOTIFIER_KEYS))]  # valid keys; a pool keeps generation fast
        status = "ACTIVE" if rng.random() < 0.6 else SUB_STATUSES[rng.randrange(len(SUB_STATUSES))]
        assoc = rng.random() < 0.02
        if assoc:
            d.notes["service association dropped (resubscribed one by one)"] += 1
        sub = SubRow(os.urandom(24), tok.token_id, rng.choice(servers), os.urandom(24), nkey, status, assoc)
        d.subs.append(sub)
        if j < 7 and rng.random() < 0.3:  # Haskell keeps one per subscription, ≤ 6 per token
            d.ntfs.append(NtfRow(tok.token_id, sub.subscription_id,
                                 base + dt.timedelta(seconds=rng.randrange(86400), microseconds=rng.randrange(10**6)),
                                 os.urandom(24), os.urandom(144)))
    mine = [x for x in d.ntfs if x.token_id == tok.token_id]
    if len(mine) > 6:
        d.refused["last notification: older than the newest 6 of its token"] += len(mine) - 6


def _add_bad_rows(d: HaskellData, rng: random.Random, servers: list[int], bad_server: int) -> None:
    _, vk = ed25519_pair()
    bogus = token_row(rng, status="BOGUS", provider="apns_prod", verify_key=vk)
    d.tokens.append(bogus)
    d.refused["token: unknown token status 'BOGUS'"] += 1
    nkey, _ = ed25519_pair()
    for _ in range(2):
        d.subs.append(SubRow(os.urandom(24), bogus.token_id, servers[0], os.urandom(24), nkey, "ACTIVE", False))
    d.refused["subscription: its token was refused"] += 2
    d.ntfs.append(NtfRow(bogus.token_id, d.subs[-1].subscription_id, dt.datetime.now(dt.UTC), os.urandom(24),
                         os.urandom(144)))
    d.refused["last notification: its token was refused"] += 1
    d.tokens.append(token_row(rng, status="ACTIVE", provider="apns_prod", verify_key=b"\x30" + bytes(43)))
    d.refused["token: verify key is not an Ed25519/Ed448/X25519 SPKI"] += 1
    bad_dh = token_row(rng, status="ACTIVE", provider="apns_prod", verify_key=ed25519_pair()[1])
    d.tokens.append(dataclasses.replace(bad_dh, dh_priv_key=ed25519_pair()[0]))
    d.refused["token: DH private key is not an X25519 PKCS#8 key"] += 1
    _, vk = ed25519_pair()
    good = token_row(rng, status="ACTIVE", provider="apns_prod", verify_key=vk)
    d.tokens.append(good)
    d.subs.append(SubRow(os.urandom(24), good.token_id, servers[1], os.urandom(24), nkey, "WHATEVER", False))
    d.refused["subscription: unknown subscription status 'WHATEVER'"] += 1
    d.subs.append(SubRow(os.urandom(24), good.token_id, None, os.urandom(24), nkey, "ACTIVE", False))
    d.refused["subscription: subscription without an SMP server"] += 1
    for _ in range(3):
        d.subs.append(SubRow(os.urandom(24), good.token_id, bad_server, os.urandom(24), nkey, "ACTIVE", False))
    d.refused["subscription: subscription of an SMP server that was rejected"] += 3
    d.subs.append(SubRow(os.urandom(24), good.token_id, servers[2], os.urandom(24), nkey, "ERR " + "x" * 300, False))
    d.notes[ERR_TEXT_NOTE] += 1


def load(url: str, d: HaskellData, schema: str = "ntf_server") -> None:
    """Insert everything (COPY); server ids are the identity values PostgreSQL assigns, in order."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for s in d.servers:
            cur.execute(f"INSERT INTO {schema}.smp_servers (smp_host, smp_port, smp_keyhash, ntf_service_id, "
                        "ntf_service_cert, ntf_service_priv_key) VALUES (%s, %s, %s, %s, %s, %s) "
                        "RETURNING smp_server_id",
                        (s.smp_host, s.smp_port, s.smp_keyhash, s.ntf_service_id, s.ntf_service_cert,
                         s.ntf_service_priv_key))
            row = cur.fetchone()
            assert row is not None and row[0] == s.smp_server_id
        _copy(cur, f"{schema}.tokens", TokenRow, d.tokens)
        _copy(cur, f"{schema}.subscriptions", SubRow, d.subs)
        _copy(cur, f"{schema}.last_notifications", NtfRow, d.ntfs)


def _copy(cur: psycopg.Cursor[object], table: str, cls: type, rows: list[object]) -> None:
    cols = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:  # type: ignore[arg-type]
        for r in rows:
            copy.write_row([getattr(r, c) for c in cols])
