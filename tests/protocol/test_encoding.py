"""Primitive encodings (spec §2.1) with the literal vectors of §7.1 (T2, T3, T5–T7) and §7.3 (V1)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from ntf_server.protocol.encoding import (
    CodecError,
    Reader,
    SMPServer,
    b64u_decode,
    b64u_encode,
    check_host,
    dec_smp_server,
    decode_all,
    enc_bool,
    enc_int64,
    enc_large,
    enc_list,
    enc_maybe,
    enc_nonempty,
    enc_short,
    enc_smp_server,
    enc_word16,
    enc_word32,
    pad,
    unpad,
)

KEY_HASH = b64u_decode("LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI=")


def test_t2_int64_vector() -> None:
    assert enc_int64(1234567890123456789) == bytes.fromhex("112210f47de98115")
    assert Reader(bytes.fromhex("112210f47de98115")).int64() == 1234567890123456789


def test_int64_negative_two_complement() -> None:
    assert enc_int64(-1) == b"\xff" * 8
    assert decode_all(enc_int64(-(2**63)), Reader.int64) == -(2**63)


def test_t3_system_time_drops_nanoseconds() -> None:
    t = dt.datetime(2022, 1, 1, 10, 24, 5, 999_999, tzinfo=dt.UTC)
    seconds = int(t.timestamp())
    assert seconds == 1641032645
    assert enc_int64(seconds) == (1641032645).to_bytes(8, "big")


def test_word_and_bool_encodings() -> None:
    assert enc_word16(0x0102) == b"\x01\x02"
    assert enc_word32(0x01020304) == b"\x01\x02\x03\x04"
    assert enc_bool(True) == b"T" and enc_bool(False) == b"F"
    with pytest.raises(CodecError):
        decode_all(b"X", Reader.bool)
    with pytest.raises(CodecError):
        enc_word16(65536)


def test_strings_and_limits() -> None:
    assert enc_short(b"abc") == b"\x03abc"
    assert enc_large(b"abc") == b"\x00\x03abc"
    with pytest.raises(CodecError):
        enc_short(b"x" * 256)
    with pytest.raises(CodecError):
        decode_all(b"\x05ab", Reader.short)  # length larger than the input


def test_maybe_uses_ascii_digits() -> None:
    assert enc_maybe(None, enc_short) == b"0"
    assert enc_maybe(b"a", enc_short) == b"1\x01a"
    assert decode_all(b"1\x01a", lambda r: r.maybe(Reader.short)) == b"a"
    with pytest.raises(CodecError):
        decode_all(b"\x01\x01a", lambda r: r.maybe(Reader.short))


def test_lists_and_nonempty() -> None:
    assert enc_list([b"a", b"bc"], enc_short) == b"\x02\x01a\x02bc"
    assert decode_all(b"\x00", lambda r: r.items(Reader.short)) == []
    with pytest.raises(CodecError):
        decode_all(b"\x00", lambda r: r.nonempty(Reader.short))
    with pytest.raises(CodecError):
        enc_nonempty([], enc_short)


def test_v1_pad_and_t4_overflow() -> None:
    assert pad(b"abc", 5) == bytes.fromhex("0003616263")
    with pytest.raises(CodecError):
        pad(b"abc", 4)


def test_t5_unpad() -> None:
    assert unpad(b"\x00\x00") == b""
    assert unpad(b"\x00\x03abc") == b"abc"
    for bad in (b"\x00", b"", b"\x00\x03ab"):
        with pytest.raises(CodecError):
            unpad(bad)


def test_t6_pad_limits() -> None:
    with pytest.raises(CodecError):
        pad(b"a" * 65534, 65536)
    assert unpad(pad(b"a" * 65533, 65535)) == b"a" * 65533


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=100))
def test_pad_round_trip(msg: bytes, extra: int) -> None:
    padded = pad(msg, len(msg) + 2 + extra)
    assert len(padded) == len(msg) + 2 + extra
    assert unpad(padded) == msg


def test_b64u_padding() -> None:
    assert b64u_encode(b"\xfb\xff") == "-_8="
    assert b64u_decode("-_8=") == b"\xfb\xff"
    assert b64u_decode("-_8") == b"\xfb\xff"
    for bad in ("+/8=", "a", "ab$c"):
        with pytest.raises(CodecError):
            b64u_decode(bad)


@given(st.binary(max_size=100))
def test_b64u_round_trip(b: bytes) -> None:
    assert b64u_decode(b64u_encode(b)) == b


@pytest.mark.parametrize(
    "host", ["smp.simplex.im", "o5vmywmrnaxalvz6wi3zicyftgio6psuvyniis6gco6bp6ekl4cqj4id.onion",
             "192.168.0.1", "192.168.1", "192.256.0.1", "::1", "localhost"]
)
def test_t7_hosts_accepted(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize(
    "host", ["smp,simplex.im", "smp:simplex.im", "smp#simplex.im", "smp simplex.im", "192.168.0.0.1", ""]
)
def test_t7_hosts_rejected(host: str) -> None:
    with pytest.raises(CodecError):
        check_host(host)


def test_smp_server_wire_and_uri() -> None:
    s = SMPServer(("localhost",), "5001", KEY_HASH)
    wire = enc_smp_server(s)
    assert wire == b"\x01\x09localhost\x045001\x20" + KEY_HASH
    assert decode_all(wire, dec_smp_server) == s
    assert s.to_uri() == "smp://LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI=@localhost:5001"
    assert SMPServer.from_uri(s.to_uri()) == s
    assert SMPServer(("a.b", "c.d"), "", KEY_HASH).to_uri().endswith("@a.b,c.d")
    assert s.effective_port == 5001 and SMPServer(("h",), "", KEY_HASH).effective_port == 5223


def test_preset_server_host_is_expanded_with_its_onion() -> None:
    s = decode_all(enc_smp_server(SMPServer(("smp4.simplex.im",), "", KEY_HASH)), dec_smp_server)
    assert s.hosts == ("smp4.simplex.im", "o5vmywmrnaxalvz6wi3zicyftgio6psuvyniis6gco6bp6ekl4cqj4id.onion")


def test_smp_server_rejects_bad_fields() -> None:
    with pytest.raises(CodecError):
        SMPServer(("localhost",), "50x", KEY_HASH)
    with pytest.raises(CodecError):
        SMPServer(("localhost",), "", b"short")
    with pytest.raises(CodecError):
        decode_all(b"\x00\x00\x20" + KEY_HASH, dec_smp_server)  # no hosts


@given(st.binary(max_size=300))
def test_smp_server_decoder_fuzz(data: bytes) -> None:
    try:
        decode_all(data, dec_smp_server)
    except CodecError:
        pass
