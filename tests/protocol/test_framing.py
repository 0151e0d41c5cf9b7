"""Transmissions, blocks, batching and versions (spec §1.4–1.5, §2.3, §7.1 T14–T15, §7.3 V7–V8)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import CodecError, Reader, enc_large, enc_short, pad
from ntf_server.protocol.framing import (
    NTF_BLOCK_SIZE,
    NTF_SUPPORTED_VRANGE,
    SMP_BLOCK_SIZE,
    SMP_CURRENT_VERSION,
    SMP_VERSION_SUB_MODE,
    Batch,
    RawTransmission,
    THParams,
    TooLarge,
    VersionRange,
    batch_transmissions,
    decode_block,
    encode_block,
    encode_transmission,
    for_auth,
    parse_block,
    parse_transmission,
    split_batch,
)
from ntf_server.protocol.smp import End, NMsg, encode_broker_msg

SESSION = b"\xaa" * 32
CORR = bytes(range(1, 25))
TOKEN_ID = b"\x11" * 24
V7_SIG = bytes.fromhex(
    "90d236a8a275e48d73dd0e95444cd05cc9a6826e1a4ef587eaed216e4cbb1306"
    "3ad3c168cb6a9d116473d1db63c9ef7527da4db686b458a3ab99ccb8bc1f9900"
)


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _block_for(params: THParams, corr: bytes, entity: bytes, command: bytes, key: Ed25519PrivateKey) -> bytes:
    authorized, _ = for_auth(params, corr, entity, command)
    t = encode_transmission(params, corr, entity, command, auth=crypto.sign(key, authorized))
    [batch] = batch_transmissions(params, [t])
    assert isinstance(batch, Batch)
    return encode_block(batch.content, params.block_size)


def test_v7_ntf_v3_tchk_block() -> None:
    params = THParams.ntf(3, SESSION)
    authorized, to_send = for_auth(params, CORR, TOKEN_ID, b"TCHK")
    assert authorized == b"\x20" + SESSION + b"\x18" + CORR + b"\x18" + TOKEN_ID + b"TCHK"
    assert crypto.sign(_key(), authorized) == V7_SIG
    block = _block_for(params, CORR, TOKEN_ID, b"TCHK", _key())
    tx = b"\x40" + V7_SIG + b"\x18" + CORR + b"\x18" + TOKEN_ID + b"TCHK"
    assert len(tx) == 119
    assert block == b"\x00\x7a\x01\x00\x77" + tx + b"#" * 388
    assert to_send == tx[65:]


def test_v7_reply_block() -> None:
    params = THParams.ntf(3, SESSION)
    t = encode_transmission(params, CORR, TOKEN_ID, b"TKN ACTIVE")
    [batch] = batch_transmissions(params, [t])
    assert isinstance(batch, Batch)
    block = encode_block(batch.content, NTF_BLOCK_SIZE)
    body = b"\x00\x18" + CORR + b"\x18" + TOKEN_ID + b"TKN ACTIVE"
    assert block[:5] == b"\x00\x40\x01\x00\x3d" and block[5 : 5 + len(body)] == body
    assert set(block[5 + len(body) :]) == {0x23}


def test_v8_ntf_v1_block_has_session_id_and_no_batch() -> None:
    params = THParams.ntf(1, SESSION)
    block = _block_for(params, CORR, TOKEN_ID, b"TCHK", _key())
    tx = b"\x40" + V7_SIG + b"\x20" + SESSION + b"\x18" + CORR + b"\x18" + TOKEN_ID + b"TCHK"
    assert block == b"\x00\x98" + tx + b"#" * (512 - 2 - 0x98)


def test_parse_transmission_recovers_fields_and_authorized() -> None:
    for params in (THParams.ntf(1, SESSION), THParams.ntf(3, SESSION)):
        block = _block_for(params, CORR, TOKEN_ID, b"TCHK", _key())
        [raw] = parse_block(params, decode_block(block, NTF_BLOCK_SIZE))
        assert not isinstance(raw, CodecError)
        assert (raw.corr_id, raw.entity_id, raw.command, raw.auth) == (CORR, TOKEN_ID, b"TCHK", V7_SIG)
        assert raw.authorized == for_auth(params, CORR, TOKEN_ID, b"TCHK")[0]
        assert raw.session_id == (b"" if params.implied_session_id else SESSION)


def test_service_signature_slot_only_with_auth() -> None:
    params = THParams.smp(SMP_CURRENT_VERSION, SESSION)
    assert params.service_auth
    signed = encode_transmission(params, CORR, TOKEN_ID, b"NSUB", auth=b"s" * 64)
    assert signed[65:66] == b"0"
    assert parse_transmission(params, signed).service_sig is None
    dbl = encode_transmission(params, CORR, TOKEN_ID, b"NSUB", auth=b"s" * 64, service_sig=b"v" * 64)
    assert dbl[65:67] == b"1\x40"
    assert parse_transmission(params, dbl).service_sig == b"v" * 64
    unsigned = encode_transmission(params, b"", b"", b"PING")
    assert unsigned == b"\x00\x00\x00PING"


def test_truncated_and_trailing_batches_are_rejected() -> None:
    params = THParams.ntf(3, SESSION)
    t = encode_transmission(params, CORR, TOKEN_ID, b"TCHK")
    content = b"\x01" + len(t).to_bytes(2, "big") + t
    assert len(split_batch(params, content)) == 1
    for bad in (content[:-1], content + b"x", b"\x00", b"\x02" + content[1:], b""):
        with pytest.raises(CodecError):
            split_batch(params, bad)


def test_one_bad_transmission_does_not_spoil_the_batch() -> None:
    params = THParams.ntf(3, SESSION)
    good = encode_transmission(params, CORR, TOKEN_ID, b"TCHK")
    bad = b"\x05ab"  # auth length beyond the transmission
    content = b"\x02" + len(bad).to_bytes(2, "big") + bad + len(good).to_bytes(2, "big") + good
    first, second = parse_block(params, content)
    assert isinstance(first, CodecError)
    assert not isinstance(second, CodecError) and second.command == b"TCHK"


def test_decode_block_requires_exact_size() -> None:
    with pytest.raises(CodecError):
        decode_block(pad(b"x", 511), NTF_BLOCK_SIZE)
    assert decode_block(pad(b"x", 512), NTF_BLOCK_SIZE) == b"x"


# ---------------------------------------------------------------- T14: exact batching splits


def _sub(params: THParams) -> bytes:
    corr, rid = os.urandom(24), os.urandom(24)
    return encode_transmission(params, corr, rid, b"SUB", auth=os.urandom(64))


def _send(params: THParams, size: int) -> bytes:
    corr, sid = os.urandom(24), os.urandom(24)
    return encode_transmission(params, corr, sid, b"SEND F " + os.urandom(size), auth=os.urandom(80))


def _counts(batches: list[Batch | TooLarge]) -> list[int | str]:
    return [len(b.indexes) if isinstance(b, Batch) else "large" for b in batches]


def test_t14_subs_current_version() -> None:
    params = THParams.smp(SMP_CURRENT_VERSION, SESSION)
    batches = batch_transmissions(params, [_sub(params) for _ in range(300)])
    assert _counts(batches) == [30, 135, 135]
    assert [i for b in batches if isinstance(b, Batch) for i in b.indexes] == list(range(300))
    assert all(len(encode_block(b.content, SMP_BLOCK_SIZE - 16)) == SMP_BLOCK_SIZE - 16 for b in batches
               if isinstance(b, Batch))


def test_t14_subs_v6() -> None:
    params = THParams.smp(SMP_VERSION_SUB_MODE, SESSION)
    assert not params.implied_session_id and not params.service_auth
    assert _counts(batch_transmissions(params, [_sub(params) for _ in range(250)])) == [38, 106, 106]


def test_t14_ends_and_nmsgs() -> None:
    params = THParams.smp(SMP_CURRENT_VERSION, SESSION)
    end = encode_broker_msg(End(), 18)
    ends = [encode_transmission(params, b"", os.urandom(24), end) for _ in range(300)]
    assert _counts(batch_transmissions(params, ends)) == [45, 255]
    nmsg = encode_broker_msg(NMsg(os.urandom(24), os.urandom(144)), 18)
    nmsgs = [encode_transmission(params, b"", os.urandom(24), nmsg) for _ in range(200)]
    assert _counts(batch_transmissions(params, nmsgs)) == [40, 80, 80]


def test_t14_break_on_message_that_does_not_fit() -> None:
    cur = THParams.smp(SMP_CURRENT_VERSION, SESSION)
    ts = [_sub(cur) for _ in range(60)] + [_send(cur, 8000)] + [_sub(cur) for _ in range(40)]
    assert _counts(batch_transmissions(cur, ts)) == [33, 68]


def test_t14_break_on_large_message() -> None:
    cur = THParams.smp(SMP_CURRENT_VERSION, SESSION)
    ts = [_sub(cur) for _ in range(60)] + [_send(cur, 17000)] + [_sub(cur) for _ in range(150)]
    batches = batch_transmissions(cur, ts)
    assert _counts(batches) == [60, "large", 15, 135]
    assert batches[1] == TooLarge(60)
    ts2 = [ts[60], *ts[:60], *ts[61:]]
    assert _counts(batch_transmissions(cur, ts2)) == ["large", 75, 135]
    v6 = THParams.smp(SMP_VERSION_SUB_MODE, SESSION)
    ts6 = [_sub(v6) for _ in range(50)] + [_send(v6, 17000)] + [_sub(v6) for _ in range(150)]
    assert _counts(batch_transmissions(v6, ts6)) == [50, "large", 44, 106]


def test_non_batched_ntf_v1_limits() -> None:
    params = THParams.ntf(1, SESSION)
    assert _counts(batch_transmissions(params, [b"x" * 510, b"x" * 511])) == [1, "large"]


@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=60))
def test_batches_round_trip_in_order(ts: list[bytes]) -> None:
    params = THParams.ntf(3, SESSION)
    out: list[bytes] = []
    for b in batch_transmissions(params, ts):
        if isinstance(b, Batch):
            assert len(b.content) <= NTF_BLOCK_SIZE - 3
            block = encode_block(b.content, NTF_BLOCK_SIZE)
            out.extend(split_batch(params, decode_block(block, NTF_BLOCK_SIZE)))
        else:
            assert len(ts[b.index]) + 2 > NTF_BLOCK_SIZE - 19
    assert out == [t for t in ts if len(t) + 2 <= NTF_BLOCK_SIZE - 19]


@given(st.binary(max_size=600))
def test_block_parsing_fuzz_only_codec_errors(data: bytes) -> None:
    for params in (THParams.ntf(1, SESSION), THParams.ntf(3, SESSION), THParams.smp(18, SESSION)):
        try:
            parse_block(params, data)
        except CodecError:
            pass


@given(st.binary(max_size=80), st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=100))
def test_transmission_round_trip_every_mode(auth: bytes, corr: bytes, entity: bytes, cmd: bytes) -> None:
    for params in (THParams.ntf(1, SESSION), THParams.ntf(2, SESSION), THParams.smp(6, SESSION),
                   THParams.smp(7, SESSION), THParams.smp(18, SESSION)):
        raw = parse_transmission(params, encode_transmission(params, corr, entity, cmd, auth=auth))
        assert (raw.auth, raw.corr_id, raw.entity_id, raw.command) == (auth, corr, entity, cmd)
        assert raw.authorized == enc_short(SESSION) + enc_short(corr) + enc_short(entity) + cmd


# The Reader forms parse_transmission and split_batch had before they went by index (for the SMP stand-in's
# CPU per NSUB): the index forms must agree with them on every input, result or CodecError.
def _reader_parse_transmission(params: THParams, data: bytes) -> RawTransmission:
    r = Reader(data)
    auth = r.short()
    service_sig = None
    if params.service_auth and auth:
        service_sig = r.maybe(Reader.short)
    rest = r.tail()
    authorized = enc_short(params.session_id) + rest if params.implied_session_id else rest
    r = Reader(rest)
    session_id = b"" if params.implied_session_id else r.short()
    corr_id = r.short()
    entity_id = r.short()
    return RawTransmission(auth, service_sig, authorized, session_id, corr_id, entity_id, r.tail())


def _reader_split_batch(data: bytes) -> list[bytes]:
    r = Reader(data)
    n = r.byte()
    if n == 0:
        raise CodecError("empty batch")
    items = [r.large() for _ in range(n)]
    r.end()
    return items


def _outcome(f: Callable[[], object]) -> object:
    try:
        return f()
    except CodecError:
        return CodecError


_EVERY_MODE = (THParams.ntf(1, SESSION), THParams.ntf(2, SESSION), THParams.smp(6, SESSION),
               THParams.smp(7, SESSION), THParams.smp(18, SESSION))


def _transmission_like(draw: st.DrawFn) -> bytes:
    """Mostly near-valid transmissions (length bytes that fit, Maybe tags), some plain noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    parts = [enc_short(draw(st.binary(max_size=70)))]
    parts.append(draw(st.sampled_from([b"", b"0", b"1", b"2"])))
    parts += [enc_short(draw(st.binary(max_size=33))) for _ in range(draw(st.integers(0, 3)))]
    parts.append(draw(st.binary(max_size=20)))
    data = b"".join(parts)
    return data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@given(st.composite(_transmission_like)(), st.booleans())
def test_parse_transmission_agrees_with_the_reader_form(data: bytes, as_view: bool) -> None:
    for params in _EVERY_MODE:
        got = _outcome(lambda: parse_transmission(params, memoryview(data) if as_view else data))  # noqa: B023
        assert got == _outcome(lambda: _reader_parse_transmission(params, data))  # noqa: B023


@given(st.lists(st.binary(max_size=40), max_size=5), st.binary(max_size=4), st.integers(0, 300))
def test_split_batch_agrees_with_the_reader_form(items: list[bytes], noise: bytes, cut: int) -> None:
    whole = bytes((len(items),)) + b"".join(enc_large(i) for i in items)
    for data in (whole, whole + noise, whole[:cut], noise, b"\x00" + whole[1:]):
        params = THParams.smp(18, SESSION)
        assert _outcome(lambda: split_batch(params, data)) == _outcome(lambda: _reader_split_batch(data))  # noqa: B023


# ---------------------------------------------------------------- T15: versions


def test_t15_version_ranges() -> None:
    a, b = VersionRange(1, 3), VersionRange(2, 4)
    assert a.intersect(b) == VersionRange(2, 3)
    assert a.compatible_version(b) == 3
    assert VersionRange(2, 4).capped(3) == VersionRange(2, 3)
    assert VersionRange(2, 3).capped(1) is None
    assert VersionRange(1, 1).intersect(VersionRange(2, 3)) is None
    assert 3 in NTF_SUPPORTED_VRANGE and 4 not in NTF_SUPPORTED_VRANGE
    with pytest.raises(CodecError):
        VersionRange(3, 2)
