"""NTF fuzz inputs, pure: valid transmissions of every command, byte-level mutations of them, whole-block
mutations (pad length, batch count) and garbage client hellos. Every generator takes a ``random.Random``:
hypothesis drives one (``st.randoms()``, so examples shrink and replay) in tests/reliability, a seeded one
drives the million-input bench (tests/bench/fuzz_ntf.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ntf_server.protocol import crypto, ntf as P
from ntf_server.protocol.encoding import SMPServer, enc_large, pad
from ntf_server.protocol.framing import BATCH_OVERHEAD, NTF_BLOCK_SIZE, THParams, encode_transmission, for_auth
from ntf_server.protocol.handshake import NtfClientHello

Mutator = Callable[[random.Random, bytes], bytes]


@dataclass(frozen=True)
class Identity:
    """What the fuzzing client knows: its session, the server's session key, a key and a real token id."""

    params: THParams
    server_dh: X25519PublicKey | None
    key: crypto.PrivateAuthKey
    token_id: bytes


def _device_token(rng: random.Random) -> P.DeviceToken:
    return P.DeviceToken(P.PushProvider.APNS_TEST, rng.randbytes(32).hex().encode())


def _smp(rng: random.Random) -> SMPServer:
    return SMPServer(("127.0.0.1",), str(rng.randint(1, 65535)), rng.randbytes(32))


def valid_command(rng: random.Random, ident: Identity) -> tuple[bytes, P.NtfCommand]:
    """(entity id, command) of any NTF command, about the real token or an unknown one."""
    token = ident.token_id if rng.random() < 0.5 else rng.randbytes(rng.choice((0, 1, 24, 32)))
    pub = crypto.encode_public_key(crypto.public_of(ident.key))
    dh = crypto.encode_public_key(crypto.generate_x25519().public_key())
    choices: list[tuple[bytes, P.NtfCommand]] = [
        (b"", P.TNew(_device_token(rng), pub, dh)),
        (token, P.TVfy(rng.randbytes(rng.randint(0, 64)))),
        (token, P.TChk()),
        (token, P.TRpl(_device_token(rng))),
        (token, P.TDel()),
        (token, P.TCrn(rng.randint(0, 0xFFFF))),  # 0 and beyond a day: the server rejects those
        (b"", P.SNew(token, _smp(rng), rng.randbytes(rng.randint(0, 40)),
                     crypto.encode_private_key(crypto.generate_ed25519()))),
        (rng.randbytes(24), P.SChk()),
        (rng.randbytes(24), P.SDel()),
        (b"", P.Ping()),
    ]
    return rng.choice(choices)


def valid_transmission(rng: random.Random, ident: Identity) -> bytes:
    entity, command = valid_command(rng, ident)
    corr = rng.randbytes(24)
    body = P.encode_command(command)
    auth = b""
    if rng.random() < 0.8 and not isinstance(command, P.Ping):
        authorized, _ = for_auth(ident.params, corr, entity, body)
        auth = crypto.client_authorize(ident.key, authorized, corr, ident.server_dh)
    return encode_transmission(ident.params, corr, entity, body, auth=auth)


# ---------------------------------------------------------------- byte mutations


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_byte(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes((rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256))),)) + data[i + 1 :]


def insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randint(0, len(data))
    return data[:i] + rng.randbytes(rng.randint(1, 64)) + data[i:]


def delete(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 32) :]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randint(0, len(data))]


def duplicate(rng: random.Random, data: bytes) -> bytes:
    i = rng.randint(0, len(data))
    j = rng.randint(i, len(data))
    return data[:j] + data[i:j] + data[j:]


def splice_space(rng: random.Random, data: bytes) -> bytes:
    """Command fields are separated by spaces: extra or missing separators hit the parsers' edges."""
    i = rng.randint(0, len(data))
    return data[:i] + b" " * rng.randint(1, 3) + data[i:] if rng.random() < 0.5 else data.replace(b" ", b"", 1)


MUTATORS: tuple[Mutator, ...] = (flip_bits, set_byte, insert, delete, truncate, duplicate, splice_space)


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(MUTATORS)(rng, data)
    return data


# ---------------------------------------------------------------- blocks


def batch_content(params: THParams, transmissions: list[bytes], count: int | None = None) -> bytes:
    """A block's content: v1 one bare transmission; v2+ ``count ‖ large(t)…`` with ``count`` possibly wrong."""
    if not params.batch:
        return transmissions[0]
    n = len(transmissions) if count is None else count
    return bytes((n & 0xFF,)) + b"".join(enc_large(t) for t in transmissions)


def fit_block(content: bytes) -> bytes:
    """Padded to a block; content too long for one is cut (the server must cope with what it gets)."""
    return pad(content[: NTF_BLOCK_SIZE - 2], NTF_BLOCK_SIZE)


def fuzz_block(rng: random.Random, ident: Identity, corpus: Sequence[bytes] = ()) -> bytes:
    """One 512-byte block: mostly a well-framed batch of mutated (or intact) valid transmissions, which reach
    the command parsers and handlers; else random bytes, a wrong count, a lying pad length, a mutated block.
    Valid transmissions are made fresh, or taken from ``corpus`` (the long bench: signing each costs more
    than the server's answer)."""
    kind = rng.choices(range(6), weights=(5, 1, 1, 1, 1, 1))[0]
    if kind == 4:
        return rng.randbytes(NTF_BLOCK_SIZE)
    count = rng.randint(1, 3) if ident.params.batch else 1
    ts = [rng.choice(corpus) if corpus else valid_transmission(rng, ident) for _ in range(count)]
    if kind in (0, 1):  # kind 1: intact
        ts = [mutate(rng, t) if kind == 0 and rng.random() < 0.7 else t for t in ts]
        while len(ts) > 1 and len(batch_content(ident.params, ts)) > NTF_BLOCK_SIZE - BATCH_OVERHEAD:
            ts.pop()  # what fits: the transmissions, not the framing, are under test here
        return fit_block(batch_content(ident.params, ts))
    if kind == 2:  # a count that disagrees with the transmissions present
        return fit_block(batch_content(ident.params, ts, rng.choice((0, len(ts) + 1, max(len(ts) - 1, 0), 255))))
    block = fit_block(batch_content(ident.params, ts))
    if kind == 3:  # the pad length (first two bytes) lies
        return rng.choice((0, 1, 510, 511, 512, 0xFFFF, rng.randrange(0x10000))).to_bytes(2, "big") + block[2:]
    return mutate(rng, block)[:NTF_BLOCK_SIZE].ljust(NTF_BLOCK_SIZE, b"#")


def client_hello(rng: random.Random, key_hash: bytes) -> bytes:
    """What a broken or hostile client answers to the server hello: a mutated hello, any version 0..6,
    a wrong key hash, random bytes, a short or a too-long write."""
    kind = rng.randrange(5)
    version = rng.randint(0, 6)
    if kind == 0:
        return rng.randbytes(NTF_BLOCK_SIZE)
    if kind == 1:
        return pad(NtfClientHello(version, rng.randbytes(32)).encode(), NTF_BLOCK_SIZE)
    hello = pad(NtfClientHello(version, key_hash).encode(), NTF_BLOCK_SIZE)
    if kind == 2:
        return hello[: rng.randint(0, NTF_BLOCK_SIZE - 1)]  # then the client goes away
    if kind == 3:
        return hello + rng.randbytes(rng.randint(1, 2 * NTF_BLOCK_SIZE))
    return mutate(rng, hello)[:NTF_BLOCK_SIZE].ljust(NTF_BLOCK_SIZE, b"#")
