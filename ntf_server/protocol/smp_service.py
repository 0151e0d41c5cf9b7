"""SMP service certificates (SMP v16+, ``Transport.hs`` / ``Server.hs`` of simplexmq master), sans-IO.

Theory of operation. A notification server may present, per SMP server, a long-lived *service
certificate* (self-signed, Ed25519; Haskell's ``genCredentials``) in TLS and in its client hello: the hello
carries role ``N`` and the certificate chain with a fresh Ed25519 *session* key signed by the certificate's
key. The SMP server answers a third handshake block, ``'R' ‖ short(serviceId)`` (the same id for the same
certificate) or ``'E' ‖ transport error``. In that session:

* every ``NSUB`` is double-signed: the queue's notifier key authorizes ``certHash ‖ authorized`` and the
  session key signs ``authorized`` into the service-signature slot; the SMP server then ties the queue
  to the service and answers ``SOK serviceId``;
* ``NSUBS count idsHash`` (entity = service id, signed by the session key alone) subscribes every queue
  tied to the service at once; the answer ``SOKS count' idsHash'`` says what the server holds (v19+: with
  the XOR of the MD5 of the queue ids), which the client compares with what it stored (drift → subscribe
  the queues one by one again);
* ``ENDS`` tells an older session of the same service that a newer one took its queues.

``certHash`` is the SHA-256 fingerprint of the chain's identity certificate (the certificate itself when
self-signed). What an SMP operator learns from this: that these queues belong to one notification server
— which it can already see from the connection they are subscribed on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ntf_server.protocol import crypto
from ntf_server.protocol.certchain import ChainError, validate_service_chain
from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.error_types import HandshakeError, TransportError, TransportErrorKind
from ntf_server.protocol.framing import SMP_BLOCK_SIZE, decode_block
from ntf_server.protocol.handshake import CertChainPubKey, ServiceRole, SmpClientService, SmpServiceResponse

SERVICE_ID_LEN: Final = 24
MAX_SERVICE_CHAIN: Final = 4


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    """Our service certificate for one SMP server: its chain (DER, leaf first) and the leaf's key."""

    chain: tuple[bytes, ...]
    key: crypto.SignPrivateKey = field(repr=False)

    @property
    def cert_hash(self) -> bytes:
        return identity_hash(self.chain)

    def __repr__(self) -> str:
        return f"ServiceCredentials({len(self.chain)} certificate(s))"


@dataclass(frozen=True, slots=True)
class ServiceSession:
    """A service session as the client sees it after the handshake."""

    service_id: bytes
    cert_hash: bytes = field(repr=False)
    key: Ed25519PrivateKey = field(repr=False)  # this session's signing key

    def __repr__(self) -> str:
        return f"ServiceSession(<{len(self.service_id)}-byte id>)"


@dataclass(frozen=True, slots=True)
class PeerService:
    """A service session as the SMP server (the stand-in) sees it."""

    service_id: bytes
    cert_hash: bytes = field(repr=False)
    key: crypto.SodiumEd25519PublicKey = field(repr=False)  # this session's key: checks every NSUB's 2nd signature


def identity_hash(chain: Sequence[bytes]) -> bytes:
    """``getFingerprint idCert HashSHA256``: the certificate itself when alone (self-signed), else the
    second one (``chainIdCaCerts``)."""
    if not chain:
        raise CodecError("empty certificate chain")
    return hashlib.sha256(chain[0] if len(chain) == 1 else chain[1]).digest()


# ---------------------------------------------------------------- client side


def client_service(creds: ServiceCredentials, session_key: Ed25519PrivateKey) -> SmpClientService:
    """The service part of our client hello: role N, our chain, the session key signed by our leaf."""
    signed = crypto.signed_exact(crypto.signed_key_tbs(session_key.public_key()), creds.key)
    return SmpClientService(ServiceRole.NOTIFIER, CertChainPubKey(creds.chain, signed))


def read_service_response(block: bytes) -> bytes:
    """The service id from the server's third handshake block; :class:`ServiceRefused` carrying the
    transport error when the server refused the service (e.g. ``HANDSHAKE BAD_SERVICE``); ``CodecError``
    when the block does not parse."""
    resp = SmpServiceResponse.decode(decode_block(block, SMP_BLOCK_SIZE))
    if resp.error is not None or resp.service_id is None:
        raise ServiceRefused(resp.error or TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.BAD_SERVICE))
    return resp.service_id


class ServiceRefused(Exception):
    def __init__(self, error: TransportError) -> None:
        super().__init__(f"SMP server refused our service: {error}")
        self.error = error


# ---------------------------------------------------------------- server side (the stand-in)


def verify_client_service(svc: SmpClientService, *, now: dt.datetime | None = None) -> tuple[bytes, Ed25519PublicKey]:
    """``getClientService`` without the TLS comparison: (cert hash, session key), or ``ChainError`` /
    ``CodecError`` (the server answers ``HANDSHAKE BAD_AUTH``)."""
    leaf_key = validate_service_chain(svc.cert_key.chain, now=now)
    return identity_hash(svc.cert_key.chain), crypto.verify_signed_sign_key(svc.cert_key.signed_key, leaf_key)


def service_response(service_id: bytes | None, error: TransportError | None = None) -> bytes:
    """The third handshake block's content (to be padded)."""
    return SmpServiceResponse(service_id, error).encode()


__all__ = ["ChainError", "CodecError", "PeerService", "ServiceCredentials", "ServiceRefused", "ServiceSession",
           "client_service", "identity_hash", "read_service_response", "service_response",
           "verify_client_service"]
