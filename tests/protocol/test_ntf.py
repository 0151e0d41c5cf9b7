"""NTF commands and responses (spec §4.1–4.2, §2.5) with the syntax vectors T8–T13 of §7.1."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, strategies as st

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, SMPServer, b64u_decode, enc_short
from ntf_server.protocol.error_types import AUTH, BLOCK, QUOTA, SESSION, CmdError, CommandError, StoreErr
from ntf_server.protocol.framing import THParams, encode_transmission, parse_block, split_batch
from ntf_server.protocol.ntf import (
    DeviceToken,
    Err,
    IdSub,
    IdTkn,
    InvalidReason,
    NtfReject,
    NtfRequest,
    Ok,
    Ping,
    Pong,
    PushProvider,
    SChk,
    SDel,
    SNew,
    Sub,
    SubStatus,
    SubStatusKind,
    TChk,
    TCrn,
    TDel,
    Tkn,
    TNew,
    TokenStatus,
    TokenStatusKind,
    TRpl,
    TVfy,
    check_response_entity,
    decode_request,
    encode_command,
    encode_response,
    parse_command,
    parse_response,
)

# T13 sample values from the Haskell test suite (standard base64).
SAMPLE_PUB = base64.b64decode("MCowBQYDK2VwAyEAfAOflyvbJv1fszgzkQ6buiZJVgSpQWsucXq7U6zjMgY=")
SAMPLE_DH = base64.b64decode("MCowBQYDK2VuAyEAriy+HcARIhqsgSjVnjKqoft+y6pxrxdY68zn4+LjYhQ=")
SAMPLE_SIG = base64.b64decode(
    "e8JK+8V3fq6kOLqco/SaKlpNaQ7i1gfOrXoqekEl42u4mF8Bgu14T5j0189CGcUhJHw2RwCMvON+qbvQ9ecJAA=="
)
SESSION_ID = b"\x07" * 32
KEY_HASH = b64u_decode("LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI=")
TNEW_BODY = b"T" + b"AT" + enc_short(b"abcd") + enc_short(SAMPLE_PUB) + enc_short(SAMPLE_DH)


def _request(params: THParams, auth: bytes, corr: bytes, entity: bytes, command: bytes) -> NtfRequest | NtfReject:
    t = encode_transmission(params, corr, entity, command, auth=auth)
    content = b"\x01" + len(t).to_bytes(2, "big") + t if params.batch else t
    [item] = parse_block(params, content)
    return decode_request(params, item)


V3 = THParams.ntf(3, SESSION_ID)


def test_t13_sample_keys_decode() -> None:
    assert len(SAMPLE_SIG) == 64
    crypto.decode_public_key(SAMPLE_PUB)
    crypto.decode_x25519_public_key(SAMPLE_DH)


def test_t8_unknown_command() -> None:
    assert _request(V3, b"", b"abcd", b"1234", b"HELLO") == NtfReject(
        b"abcd", b"1234", CmdError(CommandError.UNKNOWN)
    )


def test_t9_tnew_without_parameters() -> None:
    assert _request(V3, SAMPLE_SIG, b"bcda", b"", b"TNEW") == NtfReject(
        b"bcda", b"", CmdError(CommandError.SYNTAX)
    )


def test_t10_tnew_with_extra_bytes() -> None:
    cmd = b"TNEW" + b" \x01A" + TNEW_BODY
    assert _request(V3, SAMPLE_SIG, b"cdab", b"", cmd) == NtfReject(b"cdab", b"", CmdError(CommandError.SYNTAX))


def test_t11_tnew_without_signature() -> None:
    assert _request(V3, b"", b"dabc", b"", b"TNEW " + TNEW_BODY) == NtfReject(
        b"dabc", b"", CmdError(CommandError.NO_AUTH)
    )


def test_t12_tnew_with_entity_echoes_it() -> None:
    assert _request(V3, SAMPLE_SIG, b"abcd", b"12345678", b"TNEW " + TNEW_BODY) == NtfReject(
        b"abcd", b"12345678", CmdError(CommandError.HAS_AUTH)
    )


def test_valid_tnew_passes_decoding() -> None:
    req = _request(V3, SAMPLE_SIG, b"abcd", b"", b"TNEW " + TNEW_BODY)
    assert isinstance(req, NtfRequest)
    assert req.command == TNew(DeviceToken(PushProvider.APNS_TEST, b"abcd"), SAMPLE_PUB, SAMPLE_DH)


def test_session_and_block_errors_have_empty_entity() -> None:
    v1 = THParams.ntf(1, SESSION_ID)
    other = THParams.ntf(1, b"\x08" * 32)
    t = encode_transmission(other, b"c1", b"tok", b"TCHK", auth=SAMPLE_SIG)
    [item] = parse_block(v1, t)
    assert decode_request(v1, item) == NtfReject(b"c1", b"", SESSION)
    assert _request(V3, b"x" * 10, b"c2", b"tok", b"TCHK") == NtfReject(b"c2", b"", BLOCK)
    [bad] = parse_block(V3, b"\x01\x00\x01\xff")
    assert decode_request(V3, bad) == NtfReject(b"", b"", BLOCK)


@pytest.mark.parametrize(
    ("auth", "entity", "cmd", "expected"),
    [
        (b"", b"", Ping(), None),
        (SAMPLE_SIG, b"", Ping(), CommandError.HAS_AUTH),
        (b"", b"e", Ping(), CommandError.HAS_AUTH),
        (SAMPLE_SIG, b"t", TChk(), None),
        (b"", b"t", TChk(), CommandError.NO_AUTH),
        (SAMPLE_SIG, b"", TDel(), CommandError.NO_AUTH),
        (SAMPLE_SIG, b"s", SChk(), None),
        (SAMPLE_SIG, b"", SDel(), CommandError.NO_AUTH),
    ],
)
def test_credential_rules(auth: bytes, entity: bytes, cmd: Ping | TChk | TDel | SChk | SDel,
                          expected: CommandError | None) -> None:
    got = _request(V3, auth, b"c", entity, encode_command(cmd))
    if expected is None:
        assert isinstance(got, NtfRequest) and got.command == cmd
    else:
        assert got == NtfReject(b"c", entity, CmdError(expected))


def test_command_wire_forms() -> None:
    token = DeviceToken(PushProvider.APNS_PROD, b"0a1b")
    assert encode_command(TVfy(b"\x01" * 32)) == b"TVFY \x20" + b"\x01" * 32
    assert encode_command(TRpl(token)) == b"TRPL AP\x040a1b"
    assert encode_command(TCrn(20)) == b"TCRN \x00\x14"
    srv = SMPServer(("localhost",), "5001", KEY_HASH)
    key = crypto.encode_private_key(crypto.generate_ed25519())
    snew = SNew(b"t" * 24, srv, b"n" * 24, key)
    assert encode_command(snew).startswith(b"SNEW S\x18" + b"t" * 24 + b"\x01\x09localhost")
    assert parse_command(encode_command(snew)) == snew
    assert encode_command(Ping()) == b"PING"


def test_commands_with_trailing_bytes_or_bad_keys_are_syntax_errors() -> None:
    syntax = CmdError(CommandError.SYNTAX)
    assert parse_command(b"TCHK ") == syntax
    assert parse_command(b"TCRN \x00\x14\x00") == syntax
    assert parse_command(b"TNEW " + TNEW_BODY.replace(SAMPLE_DH, SAMPLE_PUB)) == syntax  # Ed25519 as DH key
    assert parse_command(b"TNEW T" + b"XX" + TNEW_BODY[3:]) == syntax  # unknown provider
    assert parse_command(b"tchk") == CmdError(CommandError.UNKNOWN)


@pytest.mark.parametrize("device", [b"", b"abc", b"not hex!", b"0g", b"ab cd", "é1".encode()])
def test_device_tokens_must_be_hex_of_even_length(device: bytes) -> None:
    """Issue 16.5: in TNEW and TRPL alike."""
    syntax = CmdError(CommandError.SYNTAX)
    body = b"T" + b"AT" + enc_short(device) + enc_short(SAMPLE_PUB) + enc_short(SAMPLE_DH)
    assert parse_command(b"TNEW " + body) == syntax
    assert parse_command(b"TRPL AT" + enc_short(device)) == syntax


def test_device_tokens_are_lower_cased() -> None:
    """Issue 16.5: one device is one token whatever the case its hex was sent in."""
    body = b"T" + b"AT" + enc_short(b"ABcd09Ef") + enc_short(SAMPLE_PUB) + enc_short(SAMPLE_DH)
    assert parse_command(b"TNEW " + body) == TNew(DeviceToken(PushProvider.APNS_TEST, b"abcd09ef"), SAMPLE_PUB,
                                                  SAMPLE_DH)
    assert parse_command(b"TRPL AT" + enc_short(b"FFEE")) == TRpl(DeviceToken(PushProvider.APNS_TEST, b"ffee"))
    null = DeviceToken(PushProvider.APNS_NULL, b"test_ntf_token")  # never pushed to: taken verbatim
    assert parse_command(b"TRPL AN" + enc_short(null.token)) == TRpl(null)


def test_an_empty_notifier_id_is_a_syntax_error() -> None:
    """Issue 16.6: it reached the store, which answered ERR STORE and fired the store alert."""
    key = crypto.encode_private_key(crypto.generate_ed25519())
    snew = SNew(b"t" * 24, SMPServer(("localhost",), "5001", KEY_HASH), b"", key)
    assert parse_command(encode_command(snew)) == CmdError(CommandError.SYNTAX)


def _commands() -> st.SearchStrategy[object]:
    ids = st.binary(min_size=0, max_size=40)
    hex_token = st.binary(min_size=1, max_size=64).map(lambda b: b.hex().encode())
    token = st.one_of(st.builds(DeviceToken, st.sampled_from(list(PushProvider)), hex_token),
                      st.builds(DeviceToken, st.just(PushProvider.APNS_NULL), st.binary(max_size=64)))
    ed = crypto.encode_public_key(crypto.generate_ed25519().public_key())
    x = crypto.encode_public_key(crypto.generate_x25519().public_key())
    priv = crypto.encode_private_key(crypto.generate_x25519())
    srv = st.builds(lambda port: SMPServer(("smp.example.com", "h2.example.com"), port, KEY_HASH),
                    st.sampled_from(["", "443", "5223"]))
    return st.one_of(
        st.builds(TNew, token, st.sampled_from([ed, x]), st.just(x)),
        st.builds(TVfy, ids),
        st.builds(TRpl, token),
        st.builds(TCrn, st.integers(0, 65535)),
        st.builds(SNew, ids, srv, st.binary(min_size=1, max_size=40), st.just(priv)),
        st.sampled_from([TChk(), TDel(), SChk(), SDel(), Ping()]),
    )


@given(_commands())
def test_every_command_round_trips(cmd: object) -> None:
    wire = encode_command(cmd)  # type: ignore[arg-type]
    assert parse_command(wire) == cmd


@given(st.binary(max_size=300))
def test_command_parser_fuzz_returns_values(data: bytes) -> None:
    parse_command(data)  # never raises: errors are answers


@given(st.binary(max_size=300))
def test_response_parser_fuzz_only_codec_errors(data: bytes) -> None:
    try:
        parse_response(data)
    except CodecError:
        pass


RESPONSES = [
    IdTkn(b"t" * 24, crypto.encode_public_key(crypto.generate_x25519().public_key())),
    IdSub(b"s" * 24),
    Ok(),
    Pong(),
    Err(AUTH),
    Err(QUOTA),
    Err(CmdError(CommandError.NO_ENTITY)),
    Err(StoreErr("db down")),
    Tkn(TokenStatus(TokenStatusKind.ACTIVE)),
    Tkn(TokenStatus(TokenStatusKind.INVALID, InvalidReason.UNREGISTERED)),
    Sub(SubStatus(SubStatusKind.PENDING)),
    Sub(SubStatus.error("SMP error QUOTA")),
]


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("resp", RESPONSES, ids=lambda r: type(r).__name__)
def test_responses_round_trip_at_every_version(resp: object, version: int) -> None:
    wire = encode_response(resp, version)  # type: ignore[arg-type]
    got = parse_response(wire)
    if isinstance(resp, Tkn) and version < 3:
        assert got == Tkn(TokenStatus(resp.status.kind))  # reason dropped before v3
    else:
        assert got == resp


def test_token_status_text_forms() -> None:
    texts = ["NEW", "REGISTERED", "INVALID", "INVALID,BAD", "INVALID,TOPIC", "INVALID,EXPIRED",
             "INVALID,UNREGISTERED", "CONFIRMED", "ACTIVE", "EXPIRED"]
    for t in texts:
        assert TokenStatus.from_text(t).to_text() == t
    assert encode_response(Tkn(TokenStatus(TokenStatusKind.INVALID, InvalidReason.BAD)), 2) == b"TKN INVALID"
    for bad in ("ACTIVE,BAD", "INVALID,", "active"):
        with pytest.raises(CodecError):
            TokenStatus.from_text(bad)


def test_sub_status_text_forms() -> None:
    for t in ["NEW", "PENDING", "ACTIVE", "INACTIVE", "END", "DELETED", "AUTH", "SERVICE", "ERR x y"]:
        assert SubStatus.from_text(t).to_text() == t
    with pytest.raises(CodecError):
        SubStatus.from_text("ERR")


def test_response_entity_rules() -> None:
    assert check_response_entity(IdTkn(b"t", b"k"), b"")
    assert not check_response_entity(IdTkn(b"t", b"k"), b"x")
    assert not check_response_entity(Ok(), b"")
    assert check_response_entity(Err(AUTH), b"")
    assert check_response_entity(Tkn(TokenStatus(TokenStatusKind.NEW)), b"t")


def test_device_token_repr_hides_token() -> None:
    token = os.urandom(32).hex().encode()
    assert token.decode() not in repr(DeviceToken(PushProvider.APNS_PROD, token))
    assert token.decode() not in repr(TNew(DeviceToken(PushProvider.APNS_PROD, token), SAMPLE_PUB, SAMPLE_DH))


def test_batched_responses_split() -> None:
    ts = [encode_transmission(V3, b"c%d" % i, b"", encode_response(Pong(), 3)) for i in range(3)]
    content = bytes([3]) + b"".join(len(t).to_bytes(2, "big") + t for t in ts)
    assert split_batch(V3, content) == ts
