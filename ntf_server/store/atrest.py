"""Secrets at rest: the store key file, AES-GCM for secret fields, HMAC for index keys.

One 32-byte master key lives in the config directory (`store.key`, mode 0600). Three subkeys are derived
from it with HKDF, so no key is used for two purposes:

* `enc`  – AES-256-GCM for device tokens, DH private keys/secrets, registration codes, notifier ids and
  keys. Every ciphertext is `version(1) ‖ nonce(12) ‖ ct ‖ tag(16)`, with the record id and field name as
  associated data, so a ciphertext copied to another record or field does not decrypt.
* `idx`  – HMAC-SHA256 naming index keys: `(provider, device token)`, `(SMP server, notifier id)`.
* `sid`  – the PRF that masks the SMP server number inside subscription ids (see `keys.py`).

Rotation (not automated): the HMAC-named indexes depend on the key, so rotating it means re-writing the
whole store. Procedure: stop the server, run an export with the old key and an import into a fresh
prefix/database with the new key, then switch `store.key` and the prefix. The version byte lets a future
lazy re-encryption of secret fields tell old ciphertexts from new ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ntf_server.store.errors import StoreError

KEY_BYTES: Final = 32
CIPHER_VERSION: Final = 1
NONCE_BYTES: Final = 12
CIPHER_OVERHEAD: Final = 1 + NONCE_BYTES + 16
_FILE_HEADER: Final = "ntf-server store key v1"


def load_or_create_store_key(path: Path) -> bytes:
    """Read the store master key, creating it (0600, atomically) on first use.

    File format: a header line and the base64 key, so an operator can tell it from other key files.
    """
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{_FILE_HEADER}\n{base64.b64encode(key).decode()}\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process created the key meanwhile: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise StoreError(f"store key file {path} must not be readable by group/others (chmod 600)")
    lines = path.read_text().splitlines()
    try:
        key = base64.b64decode(lines[1].strip(), validate=True) if lines[0] == _FILE_HEADER else b""
    except (ValueError, IndexError):
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreError(f"store key file {path} is not a valid ntf-server store key")
    return key


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ntf-store " + purpose).derive(master)


class AtRest:
    """Encryption and keyed hashing with subkeys of the store master key."""

    __slots__ = ("_aead", "_idx", "_sid")  # keyed HMAC templates: copying one skips the key setup

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("store master key must be 32 bytes")
        self._aead = AESGCM(_derive(master_key, b"enc"))
        self._idx = hmac.new(_derive(master_key, b"idx"), digestmod=hashlib.sha256)
        self._sid = hmac.new(_derive(master_key, b"sid"), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "<AtRest>"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return bytes([CIPHER_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < CIPHER_OVERHEAD or sealed[0] != CIPHER_VERSION:
            raise StoreError("stored secret has an unknown format")
        try:
            return self._aead.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise StoreError("stored secret does not decrypt (wrong store key or corrupted data)") from None

    def index(self, *parts: bytes, length: int = 16) -> bytes:
        """Keyed hash of length-prefixed parts (unambiguous), truncated to `length` bytes."""
        mac = self._idx.copy()  # ~30% less than a new HMAC (tests/bench/record_auth.py: 3 a token read)
        mac.update(b"".join(len(p).to_bytes(2, "big") + p for p in parts))
        return mac.digest()[:length]

    def sid_mask(self, r: bytes) -> bytes:
        mac = self._sid.copy()
        mac.update(r)
        return mac.digest()[:4]
