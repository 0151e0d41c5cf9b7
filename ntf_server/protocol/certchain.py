"""Server certificate chain validation (§1.2), pure: used by the SMP client handshake in protocol/
and by transport/tls.py (which re-exports everything here).

SimpleX does not use the web PKI: a server is identified by the SHA-256 of its identity certificate, and the
client checks the presented chain against that hash itself (Haskell ``validateCertificateChain``).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from ntf_server.protocol.crypto import key_hash as fingerprint

MIN_CHAIN: Final = 2
MAX_CHAIN: Final = 4

PeerKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


class ChainErrorKind(StrEnum):
    """Why a server chain was rejected; names follow the Haskell/x509 failure reasons."""

    EMPTY_CHAIN = "EmptyChain"  # fewer than 2 certificates
    AUTHORITY_TOO_DEEP = "AuthorityTooDeep"  # more than 4 certificates
    UNKNOWN_CA = "UnknownCA"  # identity certificate hash differs from the pinned key hash
    MALFORMED = "Malformed"  # not DER X.509
    INVALID_SIGNATURE = "InvalidSignature"
    NOT_CA = "NotAnAuthority"  # an issuer without basicConstraints CA:TRUE
    EXPIRED = "Expired"
    IN_FUTURE = "InFuture"
    LEAF_NOT_V3 = "LeafNotV3"
    UNSUPPORTED_KEY = "UnsupportedKey"  # leaf key is not Ed25519/Ed448


class ChainError(Exception):
    """The peer's certificate chain does not prove the pinned identity; close the connection."""

    def __init__(self, kind: ChainErrorKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind


# ---------------------------------------------------------------- chain validation (§1.2)


def validate_server_chain(
    chain_der: Sequence[bytes], key_hash: bytes, *, now: dt.datetime | None = None
) -> PeerKey:
    """Haskell ``validateCertificateChain``: shape 2-4, ``SHA-256(idCert) == key_hash``, each certificate
    signed by the next, issuers are CAs, all within their validity period. Host names are not checked."""
    if len(chain_der) < MIN_CHAIN:
        raise ChainError(ChainErrorKind.EMPTY_CHAIN, f"{len(chain_der)} certificate(s), need 2 to 4")
    if len(chain_der) > MAX_CHAIN:
        raise ChainError(ChainErrorKind.AUTHORITY_TOO_DEEP, f"{len(chain_der)} certificates, at most 4")
    id_der = chain_der[1]  # [leaf, ca] -> ca; [leaf, id, ca] and [leaf, id, x, ca] -> id
    if not hmac.compare_digest(fingerprint(id_der), key_hash):
        raise ChainError(ChainErrorKind.UNKNOWN_CA, "identity certificate does not match the server key hash")
    certs = _loaded_in_validity(chain_der, now)
    if certs[0].version is not x509.Version.v3:
        raise ChainError(ChainErrorKind.LEAF_NOT_V3, "leaf certificate is not X.509 v3")
    return _linked_leaf_key(certs)


def validate_service_chain(chain_der: Sequence[bytes], *, now: dt.datetime | None = None) -> PeerKey:
    """A client's service chain (SMP v16, ``chainIdCaCerts``): one self-signed certificate, or 2–4 each
    signed by the next; all within their validity; the leaf key Ed25519 or Ed448. No pinned identity:
    the server learns the identity (the certificate hash) from the chain."""
    if not 1 <= len(chain_der) <= MAX_CHAIN:
        raise ChainError(ChainErrorKind.EMPTY_CHAIN, f"{len(chain_der)} certificate(s), need 1 to 4")
    certs = _loaded_in_validity(chain_der, now)
    if len(certs) == 1:
        try:
            certs[0].verify_directly_issued_by(certs[0])
        except (InvalidSignature, ValueError, TypeError) as e:
            raise ChainError(ChainErrorKind.INVALID_SIGNATURE, "a lone certificate must be self-signed") from e
    return _linked_leaf_key(certs)


def _loaded_in_validity(chain_der: Sequence[bytes], now: dt.datetime | None) -> list[x509.Certificate]:
    certs = [_load_der(d, i) for i, d in enumerate(chain_der)]
    when = now or dt.datetime.now(dt.UTC)
    for i, cert in enumerate(certs):
        _check_validity(cert, i, when)
    return certs


def _linked_leaf_key(certs: Sequence[x509.Certificate]) -> PeerKey:
    """Each certificate issued by the next (a CA); the leaf's key, which must be Ed25519 or Ed448."""
    for i in range(len(certs) - 1):
        _check_issued_by(certs[i], certs[i + 1], i)
    leaf_key = certs[0].public_key()
    if not isinstance(leaf_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise ChainError(ChainErrorKind.UNSUPPORTED_KEY, f"leaf key {type(leaf_key).__name__}")
    return leaf_key


def _load_der(der: bytes, index: int) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise ChainError(ChainErrorKind.MALFORMED, f"certificate {index}: {e}") from e


def _check_validity(cert: x509.Certificate, index: int, when: dt.datetime) -> None:
    if when < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc
        raise ChainError(ChainErrorKind.IN_FUTURE, f"certificate {index} not valid before {start}")
    if when > cert.not_valid_after_utc:
        raise ChainError(ChainErrorKind.EXPIRED, f"certificate {index} expired {cert.not_valid_after_utc}")


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, index: int) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ChainError(ChainErrorKind.NOT_CA, f"certificate {index + 1} is not a CA")
    try:
        # Checks issuer name == subject name and the signature (Ed25519/Ed448 keys, also RSA/ECDSA).
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as e:
        raise ChainError(
            ChainErrorKind.INVALID_SIGNATURE, f"certificate {index} is not signed by certificate {index + 1}"
        ) from e
