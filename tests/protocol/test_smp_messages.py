"""SMP subset (spec §3.1–3.2): commands, broker messages, version-dependent forms."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.errors import AUTH, BlockedErr, CmdError, CommandError
from ntf_server.protocol.smp import (
    Deld,
    End,
    Ends,
    NMsg,
    NMsgMeta,
    NSub,
    NSubs,
    SmpErr,
    SmpPing,
    SmpPong,
    SOk,
    SOks,
    check_broker_entity,
    check_command_credentials,
    decrypt_nmsg_meta,
    encode_broker_msg,
    encode_command,
    encrypt_nmsg_meta,
    parse_broker_msg,
    parse_command,
    uses_service_auth,
)

NONCE = bytes(range(24))


def test_command_wire_forms_and_parsing() -> None:
    for c in (NSub(), NSubs(), SmpPing()):
        assert parse_command(encode_command(c)) == c
    assert encode_command(NSub()) == b"NSUB"
    assert parse_command(b"NSUB x") == CmdError(CommandError.SYNTAX)
    assert parse_command(b"SEND F hello") == CmdError(CommandError.PROHIBITED)
    assert parse_command(b"FOO") == CmdError(CommandError.UNKNOWN)
    assert uses_service_auth(NSub()) and not uses_service_auth(NSubs())


def test_command_credentials() -> None:
    assert check_command_credentials(True, b"n", NSub()) is None
    assert check_command_credentials(False, b"n", NSub()) == CmdError(CommandError.NO_AUTH)
    assert check_command_credentials(True, b"", NSub()) == CmdError(CommandError.NO_ENTITY)
    assert check_command_credentials(False, b"", SmpPing()) is None
    assert check_command_credentials(True, b"", SmpPing()) == CmdError(CommandError.HAS_AUTH)


def test_version_dependent_broker_forms() -> None:
    assert encode_broker_msg(SOk(None), 15) == b"OK"
    assert encode_broker_msg(SOk(None), 16) == b"SOK 0"
    assert encode_broker_msg(SOk(b"svc"), 18) == b"SOK 1\x03svc"
    assert encode_broker_msg(Deld(), 9) == b"END"
    assert encode_broker_msg(Deld(), 10) == b"DELD"
    blocked = SmpErr(BlockedErr("spam", b'{"ttl":1}'))
    assert encode_broker_msg(blocked, 11) == b"ERR AUTH"
    assert encode_broker_msg(blocked, 17) == b"ERR BLOCKED reason=spam"
    assert encode_broker_msg(blocked, 18) == b'ERR BLOCKED reason=spam,notice={"ttl":1}'
    assert encode_broker_msg(SOks(5), 18) == b"SOKS " + (5).to_bytes(8, "big")
    assert encode_broker_msg(NMsg(NONCE, b"m" * 144), 18) == b"NMSG " + NONCE + b"\x90" + b"m" * 144


@pytest.mark.parametrize(
    "msg",
    [SOk(None), SOk(b"sid"), SOks(7), NMsg(NONCE, os.urandom(144)), End(), Ends(3), Deld(), SmpErr(AUTH),
     SmpErr(CmdError(CommandError.NO_AUTH)), SmpPong()],
    ids=repr,
)
def test_broker_messages_round_trip(msg: object) -> None:
    assert parse_broker_msg(encode_broker_msg(msg, 18)) == msg  # type: ignore[arg-type]


def test_old_ok_parses_as_sok_nothing() -> None:
    assert parse_broker_msg(b"OK") == SOk(None)


def test_malformed_broker_messages() -> None:
    for bad in (b"NMSG " + NONCE[:10], b"NMSG " + NONCE + b"\x05ab", b"END x", b"SOK 2", b"MSG x", b"SOKS 1"):
        with pytest.raises(CodecError):
            parse_broker_msg(bad)


def test_broker_entity_rules() -> None:
    assert check_broker_entity(SmpPong(), b"") and not check_broker_entity(SmpPong(), b"e")
    assert not check_broker_entity(NMsg(NONCE, b""), b"")
    assert check_broker_entity(SmpErr(AUTH), b"")


def test_nmsg_repr_hides_content() -> None:
    assert "mmmm" not in repr(NMsg(NONCE, b"mmmm"))


@given(st.binary(max_size=300))
def test_broker_parser_fuzz(data: bytes) -> None:
    try:
        parse_broker_msg(data)
    except CodecError:
        pass


@given(st.binary(max_size=50))
def test_command_parser_fuzz(data: bytes) -> None:
    parse_command(data)


@given(st.binary(max_size=100), st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_nmsg_meta_round_trip_and_encryption(msg_id: bytes, ts: int) -> None:
    meta = NMsgMeta(msg_id, ts)
    assert NMsgMeta.decode(meta.encode()) == meta
    secret, nonce = bytes(range(32)), NONCE
    enc = encrypt_nmsg_meta(secret, nonce, meta)
    assert len(enc) == 144  # §3.2: cbEncrypt(…, 128) = 16 + 128
    assert decrypt_nmsg_meta(secret, nonce, enc) == meta
    with pytest.raises(CodecError):
        decrypt_nmsg_meta(bytes(32), nonce, enc)


def test_nmsg_meta_wire_form() -> None:
    assert NMsgMeta(b"ab", 1234567890123456789).encode() == b"\x02ab" + bytes.fromhex("112210f47de98115")  # T2
    with pytest.raises(CodecError):
        NMsgMeta.decode(b"\x02ab\x00")
