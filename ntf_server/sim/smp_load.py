"""Load for SMP stand-ins running in other processes (benchmarks, demo): seeded queues and an NMSG source.

A stand-in started with ``--queues N --seed S`` creates queues ``0..N-1`` whose notifier id, notifier key
and notification DH secret are derived from ``(S, i)`` by :func:`seeded_queue`; the benchmark process
calls the same function to know the keys to put in its SNEW subscriptions and the secret that decrypts
each ``NMsgMeta``, with nothing exchanged between the processes. These are test fixtures: the derivation
is a plain labelled SHA-512, never used for real keys.

:func:`notify_forever` sends ``rate_per_s`` notifications a second, round robin over the queues that have a
subscriber; each ``msgId`` is the wall-clock send time in nanoseconds (8 bytes big-endian), so whoever
decrypts the metadata can measure delivery latency end to end. When a subscriber's connection cannot take
more (its outbox is full: the subscriber applies back-pressure), the rest of that tick is not sent, so
what the subscriber receives is the rate it sustains.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from dataclasses import dataclass, field
from typing import Final, Protocol

import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.protocol import crypto

TICK_S: Final = 0.01


class KeyType(enum.StrEnum):
    ED25519 = "ed25519"
    ED448 = "ed448"
    X25519 = "x25519"


@dataclass(frozen=True, slots=True)
class SeededQueue:
    notifier_id: bytes
    notifier_key: crypto.PrivateAuthKey = field(repr=False)
    rcv_ntf_dh_secret: bytes = field(repr=False)


def _derive(seed: bytes, index: int, label: bytes) -> bytes:
    return hashlib.sha512(label + b"\x00" + seed + b"\x00" + index.to_bytes(8, "big")).digest()


def seeded_queue(seed: bytes, index: int, key_type: KeyType = KeyType.ED25519) -> SeededQueue:
    raw = _derive(seed, index, b"notifier key")
    key: crypto.PrivateAuthKey
    if key_type is KeyType.ED448:
        key = Ed448PrivateKey.from_private_bytes(raw[:57])
    elif key_type is KeyType.X25519:
        key = X25519PrivateKey.from_private_bytes(raw[:32])
    else:
        key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    return SeededQueue(_seeded_id(seed, index), key, _seeded_dh_secret(seed, index))


def _seeded_id(seed: bytes, index: int) -> bytes:
    return _derive(seed, index, b"notifier id")[:24]


def _seeded_dh_secret(seed: bytes, index: int) -> bytes:
    return _derive(seed, index, b"ntf dh secret")[:32]


@dataclass(frozen=True, slots=True)
class SeededServerQueue:
    """What the stand-in keeps of a seeded queue: the notifier's public key (as it checks NSUBs with it)."""

    notifier_id: bytes
    notifier_key: crypto.VerifyAuthKey = field(repr=False)
    rcv_ntf_dh_secret: bytes = field(repr=False)


def seeded_server_queue(seed: bytes, index: int, key_type: KeyType = KeyType.ED25519) -> SeededServerQueue:
    """:func:`seeded_queue` as the stand-in needs it: an Ed25519 public key straight from the seed through
    libsodium, without cryptography's private key object (a stand-in creates its queues in about half the
    time: 22 µs a queue instead of 40 here); the other key types through :func:`seeded_queue`."""
    if key_type is not KeyType.ED25519:
        q = seeded_queue(seed, index, key_type)
        return SeededServerQueue(q.notifier_id, crypto.verify_auth_key(crypto.public_of(q.notifier_key)),
                                 q.rcv_ntf_dh_secret)
    public = nacl.bindings.crypto_sign_seed_keypair(_derive(seed, index, b"notifier key")[:32])[0]
    return SeededServerQueue(_seeded_id(seed, index), crypto.SodiumEd25519PublicKey(public),
                             _seeded_dh_secret(seed, index))


# PKCS#8 v0 prefix and raw length per key type (§2.2), for :func:`seeded_key_der`.
_PKCS8: Final = {
    KeyType.ED25519: (bytes.fromhex("302e020100300506032b657004220420"), 32),
    KeyType.X25519: (bytes.fromhex("302e020100300506032b656e04220420"), 32),
    KeyType.ED448: (bytes.fromhex("3047020100300506032b6571043b0439"), 57),
}


def seeded_key_der(seed: bytes, index: int, key_type: KeyType = KeyType.ED25519) -> tuple[bytes, bytes]:
    """Notifier id and PKCS#8 notifier key of :func:`seeded_queue`, without building the key object (which
    costs as much as a signature): what a bulk load of a million subscriptions needs."""
    prefix, n = _PKCS8[key_type]
    return _derive(seed, index, b"notifier id")[:24], prefix + _derive(seed, index, b"notifier key")[:n]


class _Notifying(Protocol):
    def create_seeded_queue(self, q: SeededServerQueue) -> None: ...
    def subscribed_queues(self) -> list[bytes]: ...
    def notify(self, notifier_id: bytes, msg_id: bytes, msg_ts: int) -> None: ...


def create_seeded_queues(server: _Notifying, seed: bytes, count: int, key_type: KeyType = KeyType.ED25519) -> None:
    for i in range(count):
        server.create_seeded_queue(seeded_server_queue(seed, i, key_type))


async def notify_forever(server: _Notifying, rate_per_s: float) -> None:
    """About ``rate_per_s`` NMSGs a second to subscribed queues (none while nobody is subscribed)."""
    owed = 0.0
    cursor = 0
    last = time.monotonic()
    while True:
        await asyncio.sleep(TICK_S)
        now = time.monotonic()
        owed += (now - last) * rate_per_s
        last = now
        targets = server.subscribed_queues()
        if not targets:
            owed = 0.0
            continue
        for _ in range(int(owed)):
            nid = targets[cursor % len(targets)]
            cursor += 1
            try:
                server.notify(nid, time.time_ns().to_bytes(8, "big"), int(time.time()))
            except asyncio.QueueFull:  # the subscriber reads slower than the rate: offer less, keep running
                break
        owed -= int(owed)
