"""TLS contexts and certificate-chain pinning for NTF (server side) and SMP (client side), spec §1.1-1.3.

Theory of operation: SimpleX does not use the web PKI. A server is identified by the SHA-256 of its CA
certificate, and clients check the presented chain against that hash themselves. So our client contexts
run with ``CERT_NONE`` (OpenSSL still checks the handshake signature against the leaf key) and, right
after the handshake, :func:`verify_peer` takes the peer chain and runs :func:`validate_server_chain`.
Nothing must be sent before that check passes.

Python 3.11 limits (errata 1, 3): the peer chain is only available through the private
``_sslobj.get_unverified_chain()`` (public from 3.13), and the ``ssl`` module cannot set TLS 1.3 suites,
key-exchange groups or signature algorithms. OpenSSL 3's defaults already contain
TLS_CHACHA20_POLY1305_SHA256, x25519 and x448 and Ed25519/Ed448, so defaults interoperate; on top of that
:func:`narrow_to_simplex` sets the exact Haskell lists through libssl itself (ctypes, guarded: it only
acts when the loaded libssl is the one ``ssl`` was built against and the SSL_CTX pointer is proven).
"""

from __future__ import annotations

import _ssl
import asyncio
import ctypes
import datetime as dt
import functools
import hmac
import ssl
import sys
import tempfile
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from ntf_server.transport.certs import fingerprint

NTF_ALPN: Final = "ntf/1"
SMP_ALPN: Final = "smp/1"
# Haskell `alpnSupportedNTFHandshakes`: any of these negotiated => NTF version range 1..3 (spec §1.7).
NTF_SERVER_ALPN: Final = (NTF_ALPN, "h2", "http/1.1")
# TLS 1.2 only; TLS 1.3 suites are OpenSSL defaults (cannot be narrowed in Python 3.11, errata 3).
TLS12_CIPHERS: Final = "ECDHE-ECDSA-CHACHA20-POLY1305"
# Haskell `defaultSupportedParams` (spec §1.1), applied by narrow_to_simplex() when possible.
TLS13_SUITES: Final = "TLS_CHACHA20_POLY1305_SHA256"
GROUPS: Final = "X448:X25519"
SIGALGS: Final = "ed448:ed25519"
_SSL_CTRL_SET_GROUPS_LIST: Final = 92  # SSL_CTX_set1_groups_list is a macro over SSL_CTX_ctrl
_SSL_CTRL_SET_SIGALGS_LIST: Final = 98  # likewise SSL_CTX_set1_sigalgs_list
MIN_CHAIN: Final = 2
MAX_CHAIN: Final = 4

PeerKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
SSLConn = ssl.SSLObject | ssl.SSLSocket


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


class TlsError(Exception):
    """A TLS connection lacks something the protocol requires (tls-unique, peer chain)."""


# ---------------------------------------------------------------- contexts


def _base_context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    # No resumption (a resumed session would change which Finished is tls-unique) and no renegotiation.
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    narrow_to_simplex(ctx)
    return ctx


@functools.cache
def _libssl() -> ctypes.CDLL | None:
    """libssl as linked into ``_ssl`` (dlsym on the extension searches its dependencies)."""
    path = getattr(_ssl, "__file__", None)
    if sys.implementation.name != "cpython" or path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
    except (OSError, AttributeError):
        return None
    if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        return None
    return lib


def narrow_to_simplex(ctx: ssl.SSLContext) -> bool:
    """Restrict TLS 1.3 suites to CHACHA20, groups to x448/x25519 and signatures to Ed448/Ed25519.
    Returns False (context left at OpenSSL defaults, which still interoperate) if not possible."""
    lib = _libssl()
    if lib is None:
        return False
    # CPython's PySSLContext starts with PyObject_HEAD followed by `SSL_CTX *ctx`.
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != ctx.options:
        return False
    return bool(
        lib.SSL_CTX_set_ciphersuites(ptr, TLS13_SUITES.encode()) == 1
        and lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, GROUPS.encode()) == 1
        and lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SIGALGS_LIST, 0, SIGALGS.encode()) == 1
    )


def server_context(cert_file: Path, key_file: Path, ca_cert_file: Path) -> ssl.SSLContext:
    """NTF listener context: chain ``[server.crt, ca.crt]``, ALPN as Haskell, no client certificates."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(NTF_SERVER_ALPN))
    load_chain(ctx, cert_file, key_file, ca_cert_file)
    return ctx


def load_chain(ctx: ssl.SSLContext, cert_file: Path, key_file: Path, ca_cert_file: Path) -> None:
    """Load leaf + CA as one chain. OpenSSL reads extra chain certs only from the certificate file,
    so the two public PEMs are joined in a private temporary file for the duration of the call."""
    pem = cert_file.read_bytes().rstrip(b"\n") + b"\n" + ca_cert_file.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ntf-tls-") as tmp:
        chain = Path(tmp) / "chain.pem"
        chain.write_bytes(pem)
        try:
            ctx.load_cert_chain(chain, key_file)
        except ssl.SSLError as e:
            raise TlsError(f"cannot load {cert_file} + {ca_cert_file} with key {key_file}: {e}") from e


def _pinning_client_context(alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # identity is the pinned CA hash, checked by verify_peer()
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def smp_client_context(service_chain: tuple[Path, Path, Path] | None = None) -> ssl.SSLContext:
    """Context for connecting to SMP servers (§1.8): ALPN ``smp/1``; connect with ``server_hostname=None``
    (no SNI). ``service_chain`` = (cert, key, ca cert) presents our own chain when a server asks (§3.4)."""
    ctx = _pinning_client_context([SMP_ALPN])
    if service_chain is not None:
        load_chain(ctx, service_chain[0], service_chain[1], service_chain[2])
    return ctx


def ntf_client_context(*, alpn: bool = True) -> ssl.SSLContext:
    """Context for NTF clients (the simulated device, tests). ``alpn=False`` models a v1-only client."""
    return _pinning_client_context([NTF_ALPN] if alpn else [])


# ---------------------------------------------------------------- per-connection facts


def tls_unique(conn: SSLConn) -> bytes:
    """Session id = verify_data of the client's Finished (§1.3); both sides compute the same bytes."""
    value = conn.get_channel_binding("tls-unique")
    if not value:
        raise TlsError("TLS connection has no tls-unique channel binding")
    return value


def negotiated_alpn(conn: SSLConn) -> str | None:
    """The ALPN protocol, or None. NTF rule (§1.7): any value => versions 1..3, None => 1..1."""
    return conn.selected_alpn_protocol()


def peer_chain_der(conn: SSLConn) -> list[bytes]:
    """The peer's certificates as sent, leaf first, DER-encoded (errata 1)."""
    public = getattr(conn, "get_unverified_chain", None)
    # Python >= 3.13 has the public method; 3.11/3.12 only the private one on the C object.
    chain = public() if public is not None else conn._sslobj.get_unverified_chain()  # type: ignore[union-attr]
    if not chain:
        return []
    return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]


async def connect_pinned(
    host: str, port: int, context: ssl.SSLContext, key_hash: bytes, *, timeout_s: float,
    local_host: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, PeerKey]:
    """TCP + TLS without SNI (``server_hostname=""``; None would send the host name), then pin the peer.
    On a chain failure the connection is closed before anything is sent and ChainError is raised.
    ``local_host`` binds the client side (tests use other loopback addresses as other clients)."""
    local_addr = (local_host, 0) if local_host else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname="", local_addr=local_addr), timeout_s
    )
    try:
        leaf_key = verify_peer(writer.get_extra_info("ssl_object"), key_hash)
    except BaseException:
        writer.close()
        raise
    return reader, writer, leaf_key


def verify_peer(conn: SSLConn, key_hash: bytes, *, now: dt.datetime | None = None) -> PeerKey:
    """Pin the connected server to ``key_hash``; returns the TLS leaf key (to verify handshake keys)."""
    return validate_server_chain(peer_chain_der(conn), key_hash, now=now)


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
    certs = [_load_der(d, i) for i, d in enumerate(chain_der)]
    when = now or dt.datetime.now(dt.UTC)
    for i, cert in enumerate(certs):
        _check_validity(cert, i, when)
    if certs[0].version is not x509.Version.v3:
        raise ChainError(ChainErrorKind.LEAF_NOT_V3, "leaf certificate is not X.509 v3")
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
