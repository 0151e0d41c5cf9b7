"""Handshake records (§1.7 NTF, §1.8 SMP). Pure encode/decode; I/O and checks live in transport/.

Hellos are padded blocks of the protocol's block size. Trailing bytes after the known fields are ignored
(they are how newer versions extend a hello), so decoders do not call ``Reader.end``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ntf_server.protocol.encoding import CodecError, Reader, enc_large, enc_nonempty, enc_short
from ntf_server.protocol.error_types import TransportError, dec_transport_error, enc_transport_error
from ntf_server.protocol.framing import (
    NTF_VERSION_AUTH_BATCH,
    SMP_VERSION_AUTH_CMDS,
    SMP_VERSION_PROXY_SERVER_HANDSHAKE,
    SMP_VERSION_SERVICE_CERTS,
    VersionRange,
)

X25519_SPKI_LEN: Final = 44

# ---------------------------------------------------------------- NTF


@dataclass(frozen=True, slots=True)
class NtfServerHello:
    """``u16 min ‖ u16 max ‖ short(sessionId) ‖ [max ≥ 2: large(SignedExact(SPKI X25519))]``."""

    versions: VersionRange
    session_id: bytes
    signed_key: bytes | None  # raw SignedExact DER, verified by the client with the TLS leaf key

    def encode(self) -> bytes:
        out = self.versions.encode() + enc_short(self.session_id)
        if self.versions.max >= NTF_VERSION_AUTH_BATCH:
            if self.signed_key is None:
                raise CodecError("NTF server hello for v2+ needs a signed key")
            out += enc_large(self.signed_key)
        return out

    @staticmethod
    def decode(data: bytes) -> NtfServerHello:
        r = Reader(data)
        versions = VersionRange.decode(r)
        session_id = r.short()
        signed = r.large() if versions.max >= NTF_VERSION_AUTH_BATCH else None
        return NtfServerHello(versions, session_id, signed)


@dataclass(frozen=True, slots=True)
class NtfClientHello:
    """``u16 version ‖ short(keyHash)``."""

    version: int
    key_hash: bytes

    def encode(self) -> bytes:
        return self.version.to_bytes(2, "big") + enc_short(self.key_hash)

    @staticmethod
    def decode(data: bytes) -> NtfClientHello:
        r = Reader(data)
        return NtfClientHello(r.word16(), r.short())


# ---------------------------------------------------------------- SMP


@dataclass(frozen=True, slots=True)
class CertChainPubKey:
    """A certificate chain (TLS order, leaf first) and a key signed by its leaf (``CertChainPubKey``)."""

    chain: tuple[bytes, ...]
    signed_key: bytes

    def encode(self) -> bytes:
        return enc_nonempty(self.chain, enc_large) + enc_large(self.signed_key)

    @staticmethod
    def decode(r: Reader) -> CertChainPubKey:
        return CertChainPubKey(tuple(r.nonempty(Reader.large)), r.large())


@dataclass(frozen=True, slots=True)
class SmpServerHello:
    versions: VersionRange
    session_id: bytes
    cert_key: CertChainPubKey | None  # None when absent; a v7+ client then refuses the server

    def encode(self) -> bytes:
        out = self.versions.encode() + enc_short(self.session_id)
        if self.versions.max >= SMP_VERSION_AUTH_CMDS and self.cert_key is not None:
            out += self.cert_key.encode()
        return out

    @staticmethod
    def decode(data: bytes) -> SmpServerHello:
        r = Reader(data)
        versions = VersionRange.decode(r)
        session_id = r.short()
        cert_key = None
        if versions.max >= SMP_VERSION_AUTH_CMDS and not r.at_end():
            # Haskell parses this part with ``optional`` (a bad one counts as absent), but a v7+ server
            # without a valid chain cannot be pinned (§1.8), so bytes that are there but do not
            # parse are a handshake failure (CodecError), never a silent "no chain". Trailing bytes after a
            # complete part are still ignored (future extensions).
            cert_key = CertChainPubKey.decode(r)
        return SmpServerHello(versions, session_id, cert_key)


class ServiceRole(enum.Enum):
    MESSAGING = b"M"
    NOTIFIER = b"N"
    PROXY = b"P"


@dataclass(frozen=True, slots=True)
class SmpClientService:
    role: ServiceRole
    cert_key: CertChainPubKey

    def encode(self) -> bytes:
        return self.role.value + self.cert_key.encode()

    @staticmethod
    def decode(r: Reader) -> SmpClientService:
        try:
            role = ServiceRole(r.take(1))
        except ValueError as e:
            raise CodecError("bad service role") from e
        return SmpClientService(role, CertChainPubKey.decode(r))


@dataclass(frozen=True, slots=True)
class SmpClientHello:
    """``u16 v ‖ short(keyHash) ‖ [v≥7: short(SPKI)] ‖ [v≥14: proxy Bool] ‖ [v≥16: Maybe service]``."""

    version: int
    key_hash: bytes
    client_key: bytes | None  # SPKI DER of the client's ephemeral X25519 key (no Maybe tag on the wire)
    proxy_server: bool = False
    service: SmpClientService | None = None

    def encode(self) -> bytes:
        v = self.version
        out = v.to_bytes(2, "big") + enc_short(self.key_hash)
        if v >= SMP_VERSION_AUTH_CMDS and self.client_key is not None:
            out += enc_short(self.client_key)
        if v >= SMP_VERSION_PROXY_SERVER_HANDSHAKE:
            out += b"T" if self.proxy_server else b"F"
        if v >= SMP_VERSION_SERVICE_CERTS:
            out += b"0" if self.service is None else b"1" + self.service.encode()
        elif self.service is not None:
            raise CodecError("service part needs SMP v16+")
        return out

    @staticmethod
    def decode(data: bytes) -> SmpClientHello:
        r = Reader(data)
        v = r.word16()
        key_hash = r.short()
        client_key = None
        # ``optional smpP`` for the key: present iff a 44-byte X25519 SPKI follows (after it: 'T'/'F').
        if v >= SMP_VERSION_AUTH_CMDS and r.peek() == X25519_SPKI_LEN:
            client_key = r.short()
        proxy = r.bool() if v >= SMP_VERSION_PROXY_SERVER_HANDSHAKE else False
        service = r.maybe(SmpClientService.decode) if v >= SMP_VERSION_SERVICE_CERTS else None
        return SmpClientHello(v, key_hash, client_key, proxy, service)


@dataclass(frozen=True, slots=True)
class SmpServiceResponse:
    """Third handshake block after a service hello: ``'R' ‖ short(serviceId)`` or ``'E' ‖ error``."""

    service_id: bytes | None
    error: TransportError | None = None

    def encode(self) -> bytes:
        if self.error is not None:
            return b"E" + enc_transport_error(self.error)
        assert self.service_id is not None
        return b"R" + enc_short(self.service_id)

    @staticmethod
    def decode(data: bytes) -> SmpServiceResponse:
        r = Reader(data)
        tag = r.take(1)
        if tag == b"R":
            return SmpServiceResponse(r.short())
        if tag == b"E":
            return SmpServiceResponse(None, dec_transport_error(r))
        raise CodecError("bad service handshake response")
