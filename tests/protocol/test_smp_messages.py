"""SMP subset (spec §3.1–3.2): commands, broker messages, version-dependent forms."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, strategies as st

from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.error_types import AUTH, BlockedErr, CmdError, CommandError, NameErr, NameErrorKind
from ntf_server.protocol.smp import (
    EMPTY_IDS_HASH,
    BrokerMsg,
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
    queue_ids_hash,
    uses_service_auth,
)

NONCE = bytes(range(24))


VERSIONS = list(range(7, 21))  # every version our client offers


@pytest.mark.parametrize("version", VERSIONS)
def test_command_wire_forms_and_parsing(version: int) -> None:
    for c in (NSub(), SmpPing()):
        assert parse_command(encode_command(c, version), version) == c
    assert encode_command(NSub(), version) == b"NSUB"
    assert parse_command(b"NSUB x", version) == CmdError(CommandError.SYNTAX)
    assert parse_command(b"SEND F hello", version) == CmdError(CommandError.PROHIBITED)
    assert parse_command(b"FOO", version) == CmdError(CommandError.UNKNOWN)
    assert uses_service_auth(NSub()) and not uses_service_auth(NSubs())


def test_nsubs_carries_count_and_ids_hash_from_v19() -> None:
    ids_hash = queue_ids_hash([b"q1", b"q2"])
    nsubs = NSubs(2, ids_hash)
    assert encode_command(nsubs, 18) == b"NSUBS"  # before v19: no parameters ...
    assert parse_command(b"NSUBS", 18) == NSubs(-1, EMPTY_IDS_HASH)  # ... read as Haskell does
    assert encode_command(nsubs, 19) == b"NSUBS " + (2).to_bytes(8, "big") + b"\x10" + ids_hash
    assert parse_command(encode_command(nsubs, 20), 20) == nsubs
    assert parse_command(b"NSUBS", 19) == CmdError(CommandError.SYNTAX)  # v19 needs them
    assert parse_command(b"NSUBS " + (2).to_bytes(8, "big"), 19) == CmdError(CommandError.SYNTAX)


def test_queue_ids_hash_is_the_xor_of_md5s() -> None:
    a, b = os.urandom(24), os.urandom(24)
    assert queue_ids_hash([]) == EMPTY_IDS_HASH
    assert queue_ids_hash([a]) == hashlib.md5(a).digest()
    assert queue_ids_hash([a, b]) == queue_ids_hash([b, a])
    assert queue_ids_hash([a, b, b]) == queue_ids_hash([a])  # XOR: a removed queue subtracts itself


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
    assert encode_broker_msg(NMsg(NONCE, b"m" * 144), 18) == b"NMSG " + NONCE + b"\x90" + b"m" * 144


def test_soks_and_ends_carry_the_ids_hash_from_v19() -> None:
    h = queue_ids_hash([b"q"])
    five = (5).to_bytes(8, "big")
    for cls, tag in ((SOks, b"SOKS "), (Ends, b"ENDS ")):
        assert encode_broker_msg(cls(5, h), 18) == tag + five  # the hash is not sent before v19
        assert parse_broker_msg(tag + five, 18) == cls(5, EMPTY_IDS_HASH)
        assert encode_broker_msg(cls(5, h), 19) == tag + five + b"\x10" + h
        assert parse_broker_msg(tag + five + b"\x10" + h, 20) == cls(5, h)
        with pytest.raises(CodecError):  # v19 without the hash, v18 with it: both malformed
            parse_broker_msg(tag + five, 19)
        with pytest.raises(CodecError):
            parse_broker_msg(tag + five + b"\x10" + h, 18)
        with pytest.raises(CodecError):  # a hash that is not 16 bytes
            parse_broker_msg(tag + five + b"\x03abc", 19)


def test_name_errors_of_v20_are_decoded() -> None:
    for text, err in ((b"ERR NAME NO_RESOLVER", NameErr(NameErrorKind.NO_RESOLVER)),
                      (b"ERR NAME NOT_FOUND", NameErr(NameErrorKind.NOT_FOUND)),
                      (b"ERR NAME RESOLVER rpc down: timeout", NameErr(NameErrorKind.RESOLVER, "rpc down: timeout"))):
        assert parse_broker_msg(text, 20) == SmpErr(err)
        assert encode_broker_msg(SmpErr(err), 20) == text
    with pytest.raises(CodecError):
        parse_broker_msg(b"ERR NAME WHATEVER", 20)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "msg",
    [SOk(None), SOk(b"sid"), SOks(7), NMsg(NONCE, os.urandom(144)), End(), Ends(3), Deld(), SmpErr(AUTH),
     SmpErr(CmdError(CommandError.NO_AUTH)), SmpErr(NameErr(NameErrorKind.NOT_FOUND)), SmpPong(),
     SOks(7, queue_ids_hash([b"a"])), Ends(3, queue_ids_hash([b"b"]))],
    ids=repr,
)
def test_broker_messages_round_trip_at_every_version(msg: BrokerMsg, version: int) -> None:
    got = parse_broker_msg(encode_broker_msg(msg, version), version)
    match msg:
        case SOk(_) if version < 16:
            assert got == SOk(None)  # OK carries no service id
        case Deld() if version < 10:
            assert got == End()
        case SOks(n, _) | Ends(n, _) if version < 19:
            assert got == type(msg)(n, EMPTY_IDS_HASH)
        case _:
            assert got == msg


def test_old_ok_parses_as_sok_nothing() -> None:
    assert parse_broker_msg(b"OK", 18) == SOk(None)


def test_malformed_broker_messages() -> None:
    for bad in (b"NMSG " + NONCE[:10], b"NMSG " + NONCE + b"\x05ab", b"END x", b"SOK 2", b"MSG x", b"SOKS 1"):
        with pytest.raises(CodecError):
            parse_broker_msg(bad, 18)


def test_broker_entity_rules() -> None:
    assert check_broker_entity(SmpPong(), b"") and not check_broker_entity(SmpPong(), b"e")
    assert not check_broker_entity(NMsg(NONCE, b""), b"")
    assert check_broker_entity(SmpErr(AUTH), b"")


def test_nmsg_repr_hides_content() -> None:
    assert "mmmm" not in repr(NMsg(NONCE, b"mmmm"))


@given(st.binary(max_size=300), st.sampled_from(VERSIONS))
def test_broker_parser_fuzz(data: bytes, version: int) -> None:
    try:
        parse_broker_msg(data, version)
    except CodecError:
        pass


@given(st.binary(max_size=50), st.sampled_from(VERSIONS))
def test_command_parser_fuzz(data: bytes, version: int) -> None:
    parse_command(data, version)


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
