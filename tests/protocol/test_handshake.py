"""Handshake records (spec §1.7–1.8, §7.3 V9) and error encodings (§2.6)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, Reader, b64u_decode, decode_all, pad
from ntf_server.protocol.error_types import (
    AUTH,
    BlockedErr,
    BrokerResponse,
    BrokerSimple,
    BrokerTransport,
    CmdError,
    CommandError,
    HandshakeError,
    ProxyBroker,
    ProxyErr,
    ProxyProtocol,
    ProxySimple,
    SimpleError,
    StoreErr,
    TransportError,
    TransportErrorKind,
    dec_error,
    enc_error,
)
from ntf_server.protocol.framing import VersionRange
from ntf_server.protocol.handshake import (
    CertChainPubKey,
    NtfClientHello,
    NtfServerHello,
    ServiceRole,
    SmpClientHello,
    SmpClientService,
    SmpServerHello,
    SmpServiceResponse,
)

T1_KEY_HASH = b64u_decode("LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI=")


def test_t1_key_hash_literal() -> None:
    assert T1_KEY_HASH.hex() == "2dc25431f561c03f32c6302249a0f3cc6177fa42c6e14874165fd9223ad1c232"


def test_v9_ntf_client_hello() -> None:
    hello = NtfClientHello(3, T1_KEY_HASH).encode()
    assert hello == bytes.fromhex("000320") + T1_KEY_HASH
    assert pad(hello, 512)[:2] == b"\x00\x23"
    assert NtfClientHello.decode(hello + b"future fields") == NtfClientHello(3, T1_KEY_HASH)


def test_ntf_server_hello_v1_and_v3() -> None:
    sid = b"s" * 32
    v1 = NtfServerHello(VersionRange(1, 1), sid, None)
    assert v1.encode() == b"\x00\x01\x00\x01\x20" + sid
    assert NtfServerHello.decode(v1.encode()) == v1
    key = crypto.generate_x25519().public_key()
    signed = crypto.signed_exact(crypto.signed_key_tbs(key), crypto.generate_ed25519())
    v3 = NtfServerHello(VersionRange(1, 3), sid, signed)
    assert NtfServerHello.decode(v3.encode() + b"\x00trailing") == v3
    with pytest.raises(CodecError):
        NtfServerHello.decode(v3.encode()[:-1])
    with pytest.raises(CodecError):
        NtfServerHello(VersionRange(1, 3), sid, None).encode()


def _cert_key() -> CertChainPubKey:
    return CertChainPubKey((b"leaf-der", b"ca-der"), b"signed-key")


@pytest.mark.parametrize("version", [6, 7, 11, 14, 16, 18, 19, 20])
def test_smp_client_hello_fields_by_version(version: int) -> None:
    spki = crypto.encode_public_key(crypto.generate_x25519().public_key())
    hello = SmpClientHello(version, T1_KEY_HASH, spki if version >= 7 else None)
    wire = hello.encode()
    expected = version.to_bytes(2, "big") + b"\x20" + T1_KEY_HASH
    if version >= 7:
        expected += b"\x2c" + spki
    if version >= 14:
        expected += b"F"
    if version >= 16:
        expected += b"0"
    assert wire == expected
    assert SmpClientHello.decode(wire) == hello


def test_smp_client_hello_with_service_and_without_key() -> None:
    svc = SmpClientService(ServiceRole.NOTIFIER, _cert_key())
    hello = SmpClientHello(18, T1_KEY_HASH, None, False, svc)
    wire = hello.encode()
    assert wire.endswith(b"F1N\x02\x00\x08leaf-der\x00\x06ca-der\x00\x0asigned-key")
    assert SmpClientHello.decode(wire) == hello
    with pytest.raises(CodecError):
        SmpClientHello(15, T1_KEY_HASH, None, False, svc).encode()


def test_smp_server_hello() -> None:
    sid = b"x" * 32
    h = SmpServerHello(VersionRange(6, 18), sid, _cert_key())
    assert SmpServerHello.decode(h.encode()) == h
    assert SmpServerHello.decode(h.encode() + b"junk") == h
    no_key = SmpServerHello(VersionRange(6, 18), sid, None)
    assert SmpServerHello.decode(no_key.encode()) == no_key
    legacy = SmpServerHello(VersionRange(6, 6), sid, None)
    assert legacy.encode() == b"\x00\x06\x00\x06\x20" + sid


def test_smp_service_response() -> None:
    assert SmpServiceResponse.decode(b"R\x03sid") == SmpServiceResponse(b"sid")
    err = SmpServiceResponse(None, TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.BAD_SERVICE))
    assert err.encode() == b"EHANDSHAKE BAD_SERVICE"
    assert SmpServiceResponse.decode(err.encode()) == err
    with pytest.raises(CodecError):
        SmpServiceResponse.decode(b"X")


@given(st.binary(max_size=400))
def test_hello_decoders_fuzz(data: bytes) -> None:
    for dec in (NtfServerHello.decode, NtfClientHello.decode, SmpServerHello.decode, SmpClientHello.decode,
                SmpServiceResponse.decode):
        try:
            dec(data)
        except CodecError:
            pass


ERRORS = [
    SimpleError("BLOCK"), SimpleError("SESSION"), AUTH, SimpleError("SERVICE"), SimpleError("CRYPTO"),
    SimpleError("QUOTA"), SimpleError("EXPIRED"), SimpleError("NO_MSG"), SimpleError("LARGE_MSG"),
    SimpleError("INTERNAL"), SimpleError("DUPLICATE_"),
    *[CmdError(c) for c in CommandError],
    StoreErr("database error: x y"),
    BlockedErr("content"), BlockedErr("spam", b'{"a":1}'),
    ProxyErr(ProxySimple.BASIC_AUTH), ProxyErr(ProxySimple.NO_SESSION), ProxyErr(ProxyProtocol(AUTH)),
    ProxyErr(ProxyBroker(BrokerResponse(False, b"bad"))), ProxyErr(ProxyBroker(BrokerResponse(True, b"x"))),
    ProxyErr(ProxyBroker(BrokerTransport(TransportError(TransportErrorKind.VERSION)))),
    ProxyErr(ProxyBroker(BrokerTransport(TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.IDENTITY)))),
    *[ProxyErr(ProxyBroker(b)) for b in BrokerSimple],
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: enc_error(e).decode())
def test_error_round_trip(err: object) -> None:
    assert decode_all(enc_error(err), dec_error) == err  # type: ignore[arg-type]


def test_error_wire_forms() -> None:
    assert enc_error(CmdError(CommandError.HAS_AUTH)) == b"CMD HAS_AUTH"
    assert decode_all(b"CMD NO_QUEUE", dec_error) == CmdError(CommandError.NO_ENTITY)
    assert decode_all(b"PROXY BROKER NETWORK detail", dec_error) == ProxyErr(ProxyBroker(BrokerSimple.NETWORK))
    for bad in (b"NOPE", b"CMD", b"CMD WHAT", b"BLOCKED reason=other", b"AUTH x"):
        with pytest.raises(CodecError):
            decode_all(bad, dec_error)


@given(st.binary(max_size=100))
def test_error_decoder_fuzz(data: bytes) -> None:
    try:
        dec_error(Reader(data))
    except CodecError:
        pass


def test_smp_server_hello_with_a_malformed_cert_part_is_an_error() -> None:
    """Regression: a v7+ hello whose cert part does not parse used to decode as "no chain"."""
    head = VersionRange(6, 18).encode() + b"\x20" + b"x" * 32
    for bad in (b"\x02\x00\x05abc", b"\x00", b"\x01\x00\x01a"):  # short cert, empty list, no signed key
        with pytest.raises(CodecError):
            SmpServerHello.decode(head + bad)
    assert SmpServerHello.decode(VersionRange(6, 6).encode() + b"\x20" + b"x" * 32 + b"\x02junk").cert_key is None
