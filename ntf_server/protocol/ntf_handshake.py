"""The NTF handshake (§1.7), both sides, sans-IO: decisions about bytes; the I/O layers
(``transport/ntf_connection.py`` for the server, ``sim/device.py`` for the app stand-in) only move blocks.

Theory of operation. After TLS the server writes its hello: the version range (1..3 when any ALPN protocol
was negotiated, else 1..1), the session id (tls-unique) and, from v2, a fresh X25519 key signed by the TLS
leaf key. The client checks the session id against its own tls-unique, picks the highest common version,
verifies the signed key with the leaf key it pinned, and answers with that version and the server's key
hash. The server checks the key hash and the version; any mismatch closes the connection without an error
block, as Haskell does. From v2 both sides derive the per-connection DH secret used by X25519
authenticators (§2.4).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, pad
from ntf_server.protocol.framing import (
    NTF_BLOCK_SIZE,
    NTF_LEGACY_VRANGE,
    NTF_SUPPORTED_VRANGE,
    NTF_VERSION_AUTH_BATCH,
    THParams,
    VersionRange,
    decode_block,
)
from ntf_server.protocol.handshake import NtfClientHello, NtfServerHello


class NtfHandshakeFailed(Exception):
    """The peer is not who was expected or speaks no common version: close without an error block."""


# ---------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class ServerHelloSent:
    """What the server keeps between writing its hello and reading the client's."""

    block: bytes  # the padded hello block to write
    versions: VersionRange
    session_id: bytes
    dh_key: X25519PrivateKey | None  # None when the range stops at v1


def server_hello(session_id: bytes, *, alpn: bool, sign_key: crypto.SignPrivateKey) -> ServerHelloSent:
    vrange = NTF_SUPPORTED_VRANGE if alpn else NTF_LEGACY_VRANGE
    dh_key = signed = None
    if vrange.max >= NTF_VERSION_AUTH_BATCH:
        dh_key = crypto.generate_x25519()
        signed = crypto.signed_exact(crypto.signed_key_tbs(dh_key.public_key()), sign_key)
    hello = NtfServerHello(vrange, session_id, signed)
    return ServerHelloSent(pad(hello.encode(), NTF_BLOCK_SIZE), vrange, session_id, dh_key)


def server_accept(sent: ServerHelloSent, client_block: bytes, key_hash: bytes
                  ) -> tuple[THParams, X25519PrivateKey | None]:
    """Check the client's hello; returns the connection parameters and, from v2, the server's DH key."""
    try:
        client = NtfClientHello.decode(decode_block(client_block, NTF_BLOCK_SIZE))
    except CodecError as e:
        raise NtfHandshakeFailed("unparseable client hello") from e
    if not hmac.compare_digest(client.key_hash, key_hash):
        raise NtfHandshakeFailed("client expects another server identity")
    if client.version not in sent.versions:
        raise NtfHandshakeFailed(f"client version {client.version} outside {sent.versions.min}..{sent.versions.max}")
    params = THParams.ntf(client.version, sent.session_id)
    return params, (sent.dh_key if client.version >= NTF_VERSION_AUTH_BATCH else None)


# ---------------------------------------------------------------- client side


@dataclass(frozen=True, slots=True)
class NtfClientHandshake:
    params: THParams
    client_hello: bytes  # the padded block to write
    server_dh: X25519PublicKey | None  # the server's verified session key (v2+)


def client_handshake(server_block: bytes, *, key_hash: bytes, tls_unique: bytes, leaf_key: crypto.SignPublicKey,
                     versions: VersionRange = NTF_SUPPORTED_VRANGE) -> NtfClientHandshake:
    """The app's side: check the server hello against what TLS proved, choose the version, answer."""
    try:
        hello = NtfServerHello.decode(decode_block(server_block, NTF_BLOCK_SIZE))
    except CodecError as e:
        raise NtfHandshakeFailed("unparseable server hello") from e
    if not hmac.compare_digest(hello.session_id, tls_unique):
        raise NtfHandshakeFailed("server hello session id differs from tls-unique")
    common = hello.versions.intersect(versions)
    if common is None:
        raise NtfHandshakeFailed("no common NTF version")
    server_dh = None
    if hello.versions.max >= NTF_VERSION_AUTH_BATCH:
        if hello.signed_key is None:
            raise NtfHandshakeFailed("v2+ server hello without a signed key")
        try:
            server_dh = crypto.verify_signed_key(hello.signed_key, leaf_key)
        except CodecError as e:  # CryptoError included
            raise NtfHandshakeFailed("server session key is not signed by the TLS leaf") from e
    block = pad(NtfClientHello(common.max, key_hash).encode(), NTF_BLOCK_SIZE)
    return NtfClientHandshake(THParams.ntf(common.max, tls_unique), block, server_dh)
