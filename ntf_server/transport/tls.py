"""TLS contexts and certificate-chain pinning for NTF (server side) and SMP (client side), §1.1-1.3.

Theory of operation: SimpleX does not use the web PKI. A server is identified by the SHA-256 of its CA
certificate, and clients check the presented chain against that hash themselves. So our client contexts
run with ``CERT_NONE`` (OpenSSL still checks the handshake signature against the leaf key) and, right
after the handshake, :func:`verify_peer` takes the peer chain and runs :func:`validate_server_chain`.
Nothing must be sent before that check passes.

Python 3.11 limits (errata 1, 3): the peer chain is only available through the private
``_sslobj.get_unverified_chain()`` (public from 3.13), and the ``ssl`` module has no interface to set TLS 1.3
suites, key-exchange groups or signature algorithms. We keep OpenSSL's defaults for those: they contain
everything the SimpleX profile uses (TLS_CHACHA20_POLY1305_SHA256, x25519/x448, Ed25519/Ed448), so every
SimpleX peer negotiates exactly as with the Haskell server; they also admit the AES-GCM TLS 1.3 suites and
NIST curves, which a SimpleX client never offers. TLS 1.2 is narrowed to the one Haskell suite with
``set_ciphers``. (An earlier version poked the ``SSL_CTX`` pointer out of the Python object with ctypes to
narrow TLS 1.3 too; that depended on CPython's object layout, so a layout change meant a crash, and is gone.)
"""

from __future__ import annotations

import _ssl
import asyncio
import datetime as dt
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from ntf_server.protocol.certchain import (  # re-exported: the pure chain check lives in protocol/
    ChainError as ChainError,
    ChainErrorKind as ChainErrorKind,
    validate_server_chain as validate_server_chain,
)

NTF_ALPN: Final = "ntf/1"
SMP_ALPN: Final = "smp/1"
# Haskell `alpnSupportedNTFHandshakes`: any of these negotiated => NTF version range 1..3 (§1.7).
NTF_SERVER_ALPN: Final = (NTF_ALPN, "h2", "http/1.1")
# TLS 1.2 only; TLS 1.3 suites, groups and signature schemes stay at OpenSSL defaults (errata 3).
TLS12_CIPHERS: Final = "ECDHE-ECDSA-CHACHA20-POLY1305"

PeerKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
SSLConn = ssl.SSLObject | ssl.SSLSocket


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
    return ctx


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


def smp_service_context(chain_der: Sequence[bytes], key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
                        ) -> ssl.SSLContext:
    """``smp_client_context`` presenting our service certificate (SMP v16 services: the same chain as in
    the client hello, which the SMP server compares). The PEM files exist only while loading."""
    ctx = _pinning_client_context([SMP_ALPN])
    pem = b"".join(ssl.DER_cert_to_PEM_cert(d).encode() for d in chain_der)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with tempfile.TemporaryDirectory(prefix="ntf-svc-") as tmp:
        cert_file, key_file = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        cert_file.write_bytes(pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
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
    ``local_host`` binds the client side (tests: another loopback address is another client address)."""
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname="", local_addr=local), timeout_s
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
