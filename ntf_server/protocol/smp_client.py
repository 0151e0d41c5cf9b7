"""The SMP client (the notification server's side of an SMP connection), sans-IO: §1.6, §1.8, §2.3–2.4, §3.

Theory of operation. The I/O layer (``subscriber/client.py``) owns the socket; this module owns every
decision about bytes.

1. Handshake. After TLS (ALPN ``smp/1``, no SNI) the caller reads the server's first block and calls
   :func:`client_handshake` with it, the pinned key hash, the TLS ``tls-unique`` and the TLS peer chain. It
   checks the hello (session id = tls-unique; a version in our range 7..20; from v7 a certificate chain whose
   identity hash is the pinned one, whose leaf is the TLS leaf, and an X25519 session key signed by that
   leaf) and returns the padded client hello to write plus the connection parameters. With service
   credentials (v16+) the hello carries our service part, and the caller then reads the server's third
   block (``smp_service.read_service_response``) before the session starts. Any failure raises
   :class:`SmpHandshakeRejected` carrying the transport error Haskell would report; the caller closes without
   writing anything.
2. Session. ``smp_session.SmpClientSession`` is one connection after the handshake. Sending: :meth:`subscribe`
   turns (notifier id, notifier key) pairs into NSUB transmissions packed into as few full blocks as fit
   (signed with the notifier key, or an X25519 authenticator to the server's session key, §2.4);
   :meth:`ping` makes a PING block. From v11 each block is encrypted with the next key of the send chain
   (§1.6), so **blocks must be written in the order they were made**. Receiving: :meth:`receive_data`
   takes bytes as they come (any fragmentation) and returns typed events (``smp_events``). A block that
   does not decrypt, unpad or split into a batch raises ``SmpProtocolError``: from v11 the chain is
   then out of step, so the only way on is to drop the connection. A bad *transmission* inside a good block
   affects only itself.
3. Time is the caller's (``now``, any monotonic float): :meth:`expire` turns NSUBs unanswered for too long
   into ``SubscriptionTimedOut``; :meth:`idle_for` tells when to PING (60 s without traffic, §3.3).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ntf_server.protocol import crypto
from ntf_server.protocol.certchain import ChainError, validate_server_chain
from ntf_server.protocol.encoding import CodecError, pad
from ntf_server.protocol.error_types import HandshakeError, TransportError, TransportErrorKind
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    SMP_CLIENT_VRANGE,
    SMP_VERSION_AUTH_CMDS,
    SMP_VERSION_ENCRYPTED_BLOCK,
    SMP_VERSION_SERVICE_CERTS,
    THParams,
    VersionRange,
    decode_block,
    encode_block,
)
from ntf_server.protocol.handshake import SmpClientHello, SmpServerHello
from ntf_server.protocol.smp_service import ServiceCredentials, client_service


class SmpHandshakeRejected(Exception):
    """The server is not who we pinned, or speaks nothing we do: close without sending anything."""

    def __init__(self, error: TransportError, detail: str) -> None:
        super().__init__(f"{detail} ({error})")
        self.error = error


def _fail(kind: TransportErrorKind, detail: str, hs: HandshakeError | None = None) -> SmpHandshakeRejected:
    return SmpHandshakeRejected(TransportError(kind, hs), detail)


# ---------------------------------------------------------------- handshake (§1.8)


@dataclass(frozen=True, slots=True)
class SmpHandshake:
    """The outcome of a successful handshake: write ``client_hello``, then run a session."""

    params: THParams
    client_hello: bytes = field(repr=False)  # one padded block
    server_versions: VersionRange
    server_dh_key: X25519PublicKey = field(repr=False)  # for X25519 authenticators (§2.4)
    block_secret: bytes | None = field(repr=False)  # v ≥ 11: X25519 secret seeding block encryption (§1.6)
    # A service hello was sent (v16+): read the server's third block (smp_service.read_service_response)
    # and start the session with the ServiceSession it names, signed with this key.
    service_key: Ed25519PrivateKey | None = field(default=None, repr=False)


def client_handshake(
    hello_block: bytes,
    *,
    key_hash: bytes,
    tls_unique: bytes,
    peer_chain: Sequence[bytes],
    versions: VersionRange = SMP_CLIENT_VRANGE,
    client_key: X25519PrivateKey | None = None,
    now: dt.datetime | None = None,
    service: ServiceCredentials | None = None,
) -> SmpHandshake:
    """Check the server hello block and produce our hello (``smpClientHandshake``). ``peer_chain`` is the
    TLS peer chain (DER, leaf first); ``client_key`` is the ephemeral X25519 key (fresh when None); ``now``
    is the time certificate validity is checked at (the clock when None)."""
    try:
        hello = SmpServerHello.decode(decode_block(hello_block, SMP_BLOCK_SIZE))
    except CodecError as e:
        raise _fail(TransportErrorKind.HANDSHAKE, f"unparseable server hello: {e}", HandshakeError.PARSE) from e
    if not hmac.compare_digest(hello.session_id, tls_unique):
        raise _fail(TransportErrorKind.SESSION, "server hello session id is not the TLS channel binding")
    common = hello.versions.intersect(versions)
    if common is None or common.max < SMP_VERSION_AUTH_CMDS:
        raise _fail(TransportErrorKind.VERSION, f"server offers v{hello.versions.min}..{hello.versions.max}")
    server_dh = _server_session_key(hello, key_hash, peer_chain, now)
    version = common.max
    own = client_key or crypto.generate_x25519()
    service_key = Ed25519PrivateKey.generate() if service is not None and version >= SMP_VERSION_SERVICE_CERTS else None
    hello_service = client_service(service, service_key) if service is not None and service_key else None
    wire = SmpClientHello(version, key_hash, crypto.encode_public_key(own.public_key()),
                          service=hello_service).encode()
    secret = crypto.dh(server_dh, own) if version >= SMP_VERSION_ENCRYPTED_BLOCK else None
    params = THParams.smp(version, tls_unique)
    return SmpHandshake(params, pad(wire, SMP_BLOCK_SIZE), hello.versions, server_dh, secret, service_key)


def _server_session_key(
    hello: SmpServerHello, key_hash: bytes, peer_chain: Sequence[bytes], now: dt.datetime | None
) -> X25519PublicKey:
    """v7+: the hello's chain must prove the pinned identity and match TLS; its leaf signs the DH key."""
    if hello.cert_key is None:
        raise _fail(TransportErrorKind.HANDSHAKE, "v7+ server hello without a certificate chain",
                    HandshakeError.IDENTITY)
    chain = hello.cert_key.chain
    if not peer_chain or not hmac.compare_digest(chain[0], peer_chain[0]):
        raise _fail(TransportErrorKind.HANDSHAKE, "handshake leaf is not the TLS leaf", HandshakeError.IDENTITY)
    try:
        leaf_key = validate_server_chain(chain, key_hash, now=now)
    except ChainError as e:
        raise _fail(TransportErrorKind.HANDSHAKE, f"handshake chain rejected: {e}", HandshakeError.IDENTITY) from e
    try:
        return crypto.verify_signed_key(hello.cert_key.signed_key, leaf_key)
    except CodecError as e:
        raise _fail(TransportErrorKind.HANDSHAKE, f"bad signed session key: {e}", HandshakeError.BAD_AUTH) from e


# ---------------------------------------------------------------- session


class BlockCodec:
    """Plain padded blocks before v11; from v11 each block is sealed with the next chain key (§1.6)."""

    def __init__(self, hs: SmpHandshake) -> None:
        self._chains = (
            crypto.BlockCipherChain.client_pair(hs.params.session_id, hs.block_secret)
            if hs.block_secret is not None
            else None
        )

    def seal(self, content: bytes) -> bytes:
        if self._chains is None:
            return encode_block(content, SMP_BLOCK_SIZE)
        return self._chains[0].encrypt_block(content, SMP_BLOCK_SIZE)

    def open(self, block: bytes) -> bytes:
        if len(block) != SMP_BLOCK_SIZE:
            raise CodecError(f"block of {len(block)} bytes")
        if self._chains is None:
            return decode_block(block, SMP_BLOCK_SIZE)
        return self._chains[1].decrypt_block(block)

