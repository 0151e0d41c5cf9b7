"""Haskell ntf-server rows (§6.1) → our records (store/records.py). Pure: no I/O.

Each column, and how we keep it:

* tokens: `token_id` kept (the app knows it); `push_provider` text `apns_prod|apns_dev|apns_test|apns_null` →
  `PushProvider`; `push_provider_token` bytes as they are; `status` §4.2 text (`INVALID,BAD` …) →
  `TokenStatus` (same text on the wire); `verify_key` SPKI DER, checked and kept byte for byte (a repeat
  TNEW compares it); `dh_priv_key` PKCS#8 X25519 → our PKCS#8 form plus the SPKI public key IDTKN sends
  (Haskell derives it, we store it); `dh_secret` 32 raw bytes; `reg_code` raw bytes; `cron_interval`
  minutes (u16 on the wire); `cron_sent_at` Unix seconds or NULL; `updated_at` a UTC day or NULL
  (NULL: the day of the import, so the token is not "unused since 1970" for expiry).
* smp_servers: `smp_host` comma-joined hosts, `smp_port` text ('' = default port), `smp_keyhash` the
  *base64url text* of the 32-byte hash (raw 32 bytes accepted too); `ntf_service_id` with
  `ntf_service_cert` (``smpEncode`` of the chain: a NonEmpty of Large DER certificates) and
  `ntf_service_priv_key` (PKCS#8) are carried together — our service for that SMP server then is the
  Haskell server's, and its ties stay valid; an id without a usable certificate is not carried.
* subscriptions: `subscription_id` kept as the app's alias; `smp_notifier_id` raw; `smp_notifier_key` PKCS#8,
  checked and kept byte for byte (SNEW retries compare it); `status` §4.6 text (`ERR <text>` cut to 200
  bytes); `ntf_service_assoc` kept where the server's service is carried, else false (counted).
* last_notifications: `sent_at` → milliseconds; `nmsg_nonce` 24 bytes; `nmsg_data` as is; newest 6 per token.

A row that cannot be represented is a `Rejected` with the reason, which the importer counts and reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, Reader, SMPServer, b64u_decode
from ntf_server.protocol.ntf_types import PushProvider, SubStatus, TokenStatus
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.importing import MAX_LAST_NTFS, NONCE_BYTES, ImportedNotification
from ntf_server.store.keys import SUB_ID_BYTES, TOKEN_ID_BYTES
from ntf_server.store.records import MAX_ERR_TEXT, RESUBSCRIBE_KINDS, SubscriptionRecord, TokenRecord, day_of

PROVIDERS: Final = {p.text: p for p in PushProvider}
DH_SECRET_BYTES: Final = 32
KEY_HASH_BYTES: Final = 32
MAX_CRON_MIN: Final = 65535  # TCRN carries a u16
MAX_NOTIFIER_ID: Final = 255
ERR_TEXT_NOTE: Final = f"ERR status text cut to {MAX_ERR_TEXT} bytes (or empty, shown as ?)"


@dataclass(frozen=True, slots=True)
class TokenRow:
    token_id: bytes
    push_provider: str
    push_provider_token: bytes
    status: str
    verify_key: bytes
    dh_priv_key: bytes
    dh_secret: bytes
    reg_code: bytes
    cron_interval: int
    cron_sent_at: int | None
    updated_at: int | None


@dataclass(frozen=True, slots=True)
class ServerRow:
    smp_server_id: int
    smp_host: str
    smp_port: str
    smp_keyhash: bytes
    ntf_service_id: bytes | None
    ntf_service_cert: bytes | None = None
    ntf_service_priv_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class SubRow:
    subscription_id: bytes
    token_id: bytes
    smp_server_id: int | None
    smp_notifier_id: bytes
    smp_notifier_key: bytes
    status: str
    ntf_service_assoc: bool


@dataclass(frozen=True, slots=True)
class NtfRow:
    token_id: bytes
    subscription_id: bytes
    sent_at: dt.datetime
    nmsg_nonce: bytes
    nmsg_data: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row we cannot represent: never dropped silently, counted by `reason`."""

    reason: str


@dataclass(frozen=True, slots=True)
class MappedSub:
    record: SubscriptionRecord
    notes: tuple[str, ...] = ()  # what was changed to fit (counted, not refused)


def map_token(row: TokenRow, now: float) -> TokenRecord | Rejected:
    if len(row.token_id) != TOKEN_ID_BYTES:
        return Rejected("token id is not 24 bytes")
    provider = PROVIDERS.get(row.push_provider)
    if provider is None:
        return Rejected(f"unknown push provider {row.push_provider[:20]!r}")
    if not 0 < len(row.push_provider_token) <= 255:
        return Rejected("device token empty or longer than 255 bytes")
    try:
        status = TokenStatus.from_text(row.status)
    except CodecError:
        return Rejected(f"unknown token status {row.status[:40]!r}")
    try:
        crypto.decode_public_key(row.verify_key)
    except CodecError:
        return Rejected("verify key is not an Ed25519/Ed448/X25519 SPKI")
    try:
        dh_key = crypto.decode_private_key(row.dh_priv_key)
    except CodecError:
        dh_key = None
    if not isinstance(dh_key, X25519PrivateKey):
        return Rejected("DH private key is not an X25519 PKCS#8 key")
    if len(row.dh_secret) != DH_SECRET_BYTES:
        return Rejected("DH secret is not 32 bytes")
    if not row.reg_code:
        return Rejected("empty registration code")
    if not 0 <= row.cron_interval <= MAX_CRON_MIN:
        return Rejected("cron interval out of range")
    return TokenRecord(
        token_id=row.token_id, provider=provider, device_token=row.push_provider_token, status=status,
        verify_key=row.verify_key, dh_public=crypto.encode_public_key(dh_key.public_key()),
        dh_private=crypto.encode_private_key(dh_key), dh_secret=row.dh_secret, reg_code=row.reg_code,
        cron_interval_min=row.cron_interval, cron_sent_at=row.cron_sent_at,
        last_used_day=day_of(row.updated_at if row.updated_at is not None else now),
    )


def map_server(row: ServerRow) -> SMPServer | Rejected:
    kh = row.smp_keyhash
    try:
        key_hash = kh if len(kh) == KEY_HASH_BYTES else b64u_decode(kh)
        return SMPServer(tuple(row.smp_host.split(",")), row.smp_port, key_hash).normalized()
    except CodecError as e:
        return Rejected(f"SMP server address not valid: {e}")


def map_service(row: ServerRow) -> tuple[ServiceCredentials, bytes] | Rejected | None:
    """The Haskell server's service for this SMP server (certificate, key, id), or None when it has none."""
    if row.ntf_service_id is None or row.ntf_service_cert is None or row.ntf_service_priv_key is None:
        return None if row.ntf_service_id is None else Rejected("service id without its certificate and key")
    try:
        r = Reader(row.ntf_service_cert)
        chain = tuple(r.nonempty(Reader.large))
        r.end()
        key = crypto.decode_private_key(row.ntf_service_priv_key)
    except CodecError as e:
        return Rejected(f"service certificate or key not readable: {e}")
    if not isinstance(key, Ed25519PrivateKey | Ed448PrivateKey):
        return Rejected("service key is not an Ed25519/Ed448 key")
    return ServiceCredentials(chain, key), row.ntf_service_id


def map_sub(row: SubRow, servers: dict[int, SMPServer | Rejected],
            carried: frozenset[int] = frozenset()) -> MappedSub | Rejected:
    if len(row.subscription_id) != SUB_ID_BYTES:
        return Rejected("subscription id is not 24 bytes")
    server = servers.get(row.smp_server_id) if row.smp_server_id is not None else None
    if server is None:
        return Rejected("subscription without an SMP server")
    if isinstance(server, Rejected):
        return Rejected("subscription of an SMP server that was rejected")
    if not 0 < len(row.smp_notifier_id) <= MAX_NOTIFIER_ID:
        return Rejected("notifier id empty or longer than 255 bytes")
    if not _valid_notifier_key(row.smp_notifier_key):
        return Rejected("notifier key is not an Ed25519/Ed448/X25519 PKCS#8 key")
    status = sub_status(row.status)
    if status is None:
        return Rejected(f"unknown subscription status {row.status[:40]!r}")
    notes: list[str] = []
    if status.to_text() != row.status:
        notes.append(ERR_TEXT_NOTE)
    tied = row.ntf_service_assoc and row.smp_server_id in carried and status.kind in RESUBSCRIBE_KINDS
    if row.ntf_service_assoc and not tied:
        notes.append("service association dropped (resubscribed one by one)")
    record = SubscriptionRecord(row.subscription_id, row.token_id, server, row.smp_notifier_id, row.smp_notifier_key,
                                status, service_assoc=tied)
    return MappedSub(record, tuple(notes))


# The exact PKCS#8 form Haskell writes for an Ed25519 key (prefix ‖ 32-byte seed): every seed is a valid key,
# so this form is checked by shape; making a key object for each of millions of rows was half the import.
_ED25519_PKCS8_PREFIX: Final = crypto.encode_private_key(Ed25519PrivateKey.from_private_bytes(bytes(32)))[:-32]


def _valid_notifier_key(data: bytes) -> bool:
    if len(data) == len(_ED25519_PKCS8_PREFIX) + 32 and data.startswith(_ED25519_PKCS8_PREFIX):
        return True
    try:
        crypto.decode_private_key(data)
    except CodecError:
        return False
    return True


def sub_status(text: str) -> SubStatus | None:
    """`ERR <text>` is kept, the text cut to what we keep (an empty one becomes `?`)."""
    if text.startswith("ERR "):
        return SubStatus.error(text[4:])
    try:
        return SubStatus.from_text(text)
    except CodecError:
        return None


def map_notification(row: NtfRow) -> ImportedNotification | Rejected:
    if len(row.nmsg_nonce) != NONCE_BYTES:
        return Rejected("notification nonce is not 24 bytes")
    ms = int(row.sent_at.timestamp() * 1000)
    if not 0 <= ms < 10**13:
        return Rejected("notification time out of range")
    return ImportedNotification(row.subscription_id, ms, row.nmsg_nonce, row.nmsg_data)


def newest(ntfs: list[ImportedNotification]) -> tuple[list[ImportedNotification], int]:
    """The newest `MAX_LAST_NTFS` (what the server keeps per token) and how many older ones were left."""
    ordered = sorted(ntfs, key=lambda n: n.received_at_ms)
    keep = ordered[-MAX_LAST_NTFS:]
    return keep, len(ordered) - len(keep)
