"""Record layouts of the token hash and the last-notification value, and the stand-in records (the one
place each is written and read in Python; keys.py has the key names and the subscription layout).

Token hash `P t{T}` (keys.py): plain fields `p` provider code, `st` status text, `vk` verify key, `dhp` DH
public key, `ci` cron interval (minutes), `cs` last cron push (Unix s, absent until one was sent), `ud`
last-used day; index fields `x` = HMAC(provider, device token) (names its `P dt:<x>` index) and `vh` =
HMAC(verify key); sealed fields (AES-GCM, associated data field name ‖ token id) `dt` device token, `dhk`
DH private key, `ds` DH secret, `rc` registration code; MACs (keyed hashes) binding the plain
fields to the token: `km` over the verify key, DH public key and `vh` (fixed for the token's life), `pm` over
the provider and `x` (TRPL rewrites both), `sm` over the status (the status scripts write it with `st`).
Whoever can write to Redis cannot swap a verify key, move a token to another device or change its status
without the read failing (a MAC proves a value was written by this server for this token, not that it is
the latest one). The cron and last-used fields are not covered (scheduling only).

Last notification, a field of `P t{T}:ln`: ts_ms (13 decimal digits) ‖ nonce (24) ‖ encrypted metadata.
The scripts read two things of these layouts (scripts.py: `st` to tell ACTIVE tokens, the 13-digit time to
keep the newest); keep both in step.

Verification lookups answer a token hash packed into one string (`unpack_hash`), and read a stand-in
record where there is none (STYLE 4): the fixed ones below are written once per data set (meta.py).
"""

from __future__ import annotations

import hmac
from typing import Final

from ntf_server.protocol.encoding import SMPServer
from ntf_server.store.atrest import AtRest
from ntf_server.store.errors import StoreError
from ntf_server.store.keys import SUB_ID_BYTES, TOKEN_ID_BYTES
from ntf_server.store.records import (
    TOKEN_ACTIVE,
    Notice,
    PushProvider,
    TokenRecord,
    TokenStatus,
    TokenStatusKind,
)

# Token hash fields sealed with AES-GCM (associated data: field name ‖ token id).
SEALED: Final = ("dt", "dhk", "ds", "rc")
MAC_BYTES: Final = 16
LN_TS_DIGITS: Final = 13
LN_NONCE_BYTES: Final = 24

# The fixed stand-ins that verification lookups read and decrypt where there is no record (scripts.py
# `LOOKUP`; a missing token is stood in for by another, real token when there is one): sized like real ones
# (hex APNs token, Ed25519/X25519 DER keys, 24-byte notifier id). The lookups flag every stand-in "not
# found", whatever id was asked for.
DUMMY_TOKEN_ID: Final = bytes(TOKEN_ID_BYTES)
DUMMY_SUB_ID: Final = bytes(SUB_ID_BYTES)
DUMMY_SERVER: Final = SMPServer(("dummy.invalid",), "5223", bytes(32))
DUMMY_TOKEN: Final = TokenRecord(
    token_id=DUMMY_TOKEN_ID,
    provider=PushProvider.APNS_PROD,
    device_token=b"0" * 64,
    status=TOKEN_ACTIVE,
    verify_key=bytes(44),
    dh_public=bytes(44),
    dh_private=bytes(48),
    dh_secret=bytes(32),
    reg_code=bytes(32),
)
DUMMY_NOTIFIER: Final = (bytes(24), bytes(48))  # notifier id, PKCS#8 Ed25519/X25519 key

Fields = list[bytes | str | int]  # field, value, field, value, ... as HSET takes them


def unpack_hash(packed: bytes) -> dict[bytes, bytes]:
    """A hash packed by the lookup scripts (scripts.py `pack`): u16-length-prefixed field, value, ..."""
    items = []
    i, end = 0, len(packed)
    while i < end:
        n = int.from_bytes(packed[i : i + 2], "big")
        items.append(packed[i + 2 : i + 2 + n])
        i += 2 + n
    if i != end or len(items) % 2:
        raise StoreError("corrupted lookup reply")
    return dict(zip(items[::2], items[1::2], strict=True))


def encode_ln(received_at_ms: int, nonce: bytes, enc_meta: bytes) -> bytes:
    if len(nonce) != LN_NONCE_BYTES:
        raise StoreError("NMSG nonce must be 24 bytes")
    return f"{received_at_ms:0{LN_TS_DIGITS}d}".encode() + nonce + enc_meta


def decode_ln(server: SMPServer, notifier_id: bytes, v: bytes) -> Notice:
    nonce_end = LN_TS_DIGITS + LN_NONCE_BYTES
    return Notice(server, notifier_id, int(v[:LN_TS_DIGITS]), v[LN_TS_DIGITS:nonce_end], v[nonce_end:])


class TokenCodec:
    """The token hash, both ways, with the store key's encryption and keyed hashes."""

    __slots__ = ("_a",)

    def __init__(self, atrest: AtRest) -> None:
        self._a = atrest

    def __repr__(self) -> str:
        return "<TokenCodec>"

    def dt_index(self, provider: PushProvider, device_token: bytes) -> str:
        """`x`: names the `P dt:<x>` index of (provider, device token)."""
        return self._a.index(b"dt", provider.value.encode(), device_token).hex()

    def vk_index(self, verify_key: bytes) -> bytes:
        return self._a.index(b"vk", verify_key)

    def key_mac(self, tid: bytes, verify_key: bytes, dh_public: bytes, vh: bytes) -> bytes:
        return self._a.index(b"token keys", tid, verify_key, dh_public, vh, length=MAC_BYTES)

    def device_mac(self, tid: bytes, provider: PushProvider, x: str) -> bytes:
        return self._a.index(b"token device", tid, provider.value.encode(), x.encode(), length=MAC_BYTES)

    def status_mac(self, tid: bytes, status_text: str) -> bytes:
        return self._a.index(b"token status", tid, status_text.encode(), length=MAC_BYTES)

    def macs(self, t: TokenRecord) -> Fields:
        """The MAC fields of a token record (the module doc)."""
        x, vh = self.dt_index(t.provider, t.device_token), self.vk_index(t.verify_key)
        return ["km", self.key_mac(t.token_id, t.verify_key, t.dh_public, vh),
                "pm", self.device_mac(t.token_id, t.provider, x),
                "sm", self.status_mac(t.token_id, t.status.to_text())]

    def encode(self, t: TokenRecord) -> Fields:
        fields: dict[str, bytes | str | int] = {
            "p": t.provider.value,
            "st": t.status.to_text(),
            "vk": t.verify_key,
            "dhp": t.dh_public,
            "ci": t.cron_interval_min,
            "ud": t.last_used_day,
            "x": self.dt_index(t.provider, t.device_token),
            "vh": self.vk_index(t.verify_key),
        }
        for name, value in zip(SEALED, (t.device_token, t.dh_private, t.dh_secret, t.reg_code), strict=True):
            fields[name] = self._a.seal(value, name.encode() + t.token_id)
        if t.cron_sent_at is not None:
            fields["cs"] = t.cron_sent_at
        return [item for kv in fields.items() for item in kv] + self.macs(t)

    def replacement(self, token_id: bytes, provider: PushProvider, device_token: bytes, reg_code: bytes) -> Fields:
        """The fields `TRPL` rewrites (the new `x` goes with them, scripts.py REPLACE_TOKEN)."""
        registered = TokenStatusKind.REGISTERED.value
        return [
            "p", provider.value,
            "dt", self._a.seal(device_token, b"dt" + token_id),
            "rc", self._a.seal(reg_code, b"rc" + token_id),
            "st", registered,
            "pm", self.device_mac(token_id, provider, self.dt_index(provider, device_token)),
            "sm", self.status_mac(token_id, registered),
        ]  # fmt: skip

    def decode(self, tid: bytes, h: dict[bytes, bytes]) -> TokenRecord:
        """The record, after checking its MACs (a record that fails them raises StoreError like a corrupted
        one: the request is answered ERR STORE)."""
        t = self.decode_unchecked(tid, h)
        try:
            x, vh = h[b"x"].decode(), h[b"vh"]
            ok = (hmac.compare_digest(h[b"km"], self.key_mac(tid, t.verify_key, t.dh_public, vh))
                  & hmac.compare_digest(h[b"pm"], self.device_mac(tid, t.provider, x))
                  & hmac.compare_digest(h[b"sm"], self.status_mac(tid, h[b"st"].decode())))
        except (KeyError, ValueError) as e:
            raise StoreError(f"token record not authenticated: {type(e).__name__}") from e
        if not ok:
            raise StoreError("token record not authenticated (changed outside this server)")
        return t

    def decode_unchecked(self, tid: bytes, h: dict[bytes, bytes]) -> TokenRecord:
        """The record without checking its MACs: only for adding them to records from before they existed
        (upgrade.py); the sealed fields are still checked."""
        try:
            opened = {n: self._a.open(h[n.encode()], n.encode() + tid) for n in SEALED}
            cs = h.get(b"cs")
            return TokenRecord(
                token_id=tid,
                provider=PushProvider.from_code(h[b"p"]),
                device_token=opened["dt"],
                status=TokenStatus.from_text(h[b"st"].decode()),
                verify_key=h[b"vk"],
                dh_public=h[b"dhp"],
                dh_private=opened["dhk"],
                dh_secret=opened["ds"],
                reg_code=opened["rc"],
                cron_interval_min=int(h[b"ci"]),
                cron_sent_at=int(cs) if cs is not None else None,
                last_used_day=int(h[b"ud"]),
            )
        except (KeyError, ValueError) as e:
            raise StoreError(f"corrupted token record: {type(e).__name__}") from e

    def pick(self, entity_id: bytes) -> int:
        """Which token stands in for a missing one: the same for the same id, as a real record would be."""
        return int.from_bytes(self._a.index(b"stand-in", entity_id, length=4), "big")

    def found_or_standin(self, found: int, packed: bytes, tid: bytes) -> TokenRecord | None:
        """A lookup's token reply (scripts.py `token_or_standin`): the record, or None after decoding the
        stand-in it read instead, which costs what a real record does."""
        h = unpack_hash(packed)
        if found:
            return self.decode(tid, h)
        if h:
            self.decode(tid or DUMMY_TOKEN_ID, h)  # the work a real record costs; the result is unused
        return None
