"""Redaction by type (observability/sensitive.py): however a sensitive value is printed, the raw value never is."""

from __future__ import annotations

import base64
import copy
import logging
import pickle

import pytest
from hypothesis import given, strategies as st

from ntf_server.observability.sensitive import DeviceToken, NotifierId, SecretKey, Sensitive, SubId, TokenId, keyed_tag
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.ntf_types import PushProvider, TokenStatusKind
from ntf_server.store.records import SubscriptionRecord, SubStatus, SubStatusKind, TokenRecord, TokenStatus

TYPES = [DeviceToken, TokenId, SubId, NotifierId, SecretKey]
MIN_FORM = 8  # shorter renderings match hex tags by chance


def forms(value: bytes) -> set[str]:
    out = {value.hex(), value.hex().upper(), repr(value)[2:-1]}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        out |= {enc(value).decode(), enc(value).decode().rstrip("=")}
    try:
        out.add(value.decode("ascii"))
    except UnicodeDecodeError:
        pass
    return {f for f in out if len(f) >= MIN_FORM}


def renderings(s: Sensitive) -> list[str]:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %r %a", (s, s, s), None)
    old_styles = ["%s" % s, "%r" % (s,), "{}".format(s)]  # noqa: UP031, UP032 (every way code prints it)
    return [repr(s), str(s), f"{s}", f"{s!r}", f"{s:>20}", *old_styles, ascii(s),
            record.getMessage(), repr([s]), repr({"k": s}), str(copy.copy(s)), repr(getattr(s, "__dict__", None))]


@given(value=st.binary(min_size=8, max_size=64), kind=st.sampled_from(TYPES))
def test_no_rendering_shows_the_raw_value(value: bytes, kind: type[Sensitive]) -> None:
    s = kind(value)
    text = "\n".join(renderings(s))
    assert not [f for f in forms(value) if f in text]
    assert s.tag.startswith(f"{kind.KIND}:") and len(s.tag) == len(kind.KIND) + 7
    assert all(r in (s.tag, f"{s.tag:>20}") for r in renderings(s)[:9])
    assert not hasattr(s, "_value") and s.__slots__ == ("tag",)  # only the tag is kept


def test_tags_are_stable_within_a_run_and_differ_by_kind_and_value() -> None:
    v = bytes(range(32))
    assert TokenId(v) == TokenId(bytearray(v)) and TokenId(v).tag == TokenId(v).tag == keyed_tag("tkn", v)
    assert TokenId(v).tag.split(":")[1] != SubId(v).tag.split(":")[1]  # a tag does not link kinds
    assert len({TokenId(bytes([i]) * 32).tag for i in range(64)}) > 60
    assert DeviceToken("ab" * 32) == DeviceToken(b"ab" * 32)  # device tokens arrive as text or bytes


def test_the_tag_is_keyed_not_a_plain_hash() -> None:
    import hashlib

    v = b"\x11" * 32
    plain = {hashlib.sha256(v).hexdigest()[:6], hashlib.blake2b(v).hexdigest()[:6], hashlib.md5(v).hexdigest()[:6]}
    assert TokenId(v).tag.split(":")[1] not in plain


def test_sensitive_values_are_not_serialised_nor_built_from_other_types() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(TokenId(b"x" * 16))
    with pytest.raises(TypeError):
        TokenId(1234)  # type: ignore[arg-type]


def test_records_show_tags_not_ids() -> None:
    tid, sid = bytes(range(24)), bytes(range(24, 48))
    tok = TokenRecord(tid, PushProvider.APNS_TEST, b"ab" * 32, TokenStatus(TokenStatusKind.ACTIVE), b"v", b"p",
                      b"k", b"s", b"c")
    sub = SubscriptionRecord(sid, tid, SMPServer(("smp.example.com",), "5223", b"\x42" * 32), b"n" * 24, b"k",
                             SubStatus(SubStatusKind.ACTIVE))
    assert f"id={TokenId(tid)}" in repr(tok) and f"id={SubId(sid)}" in repr(sub)
    assert not [f for f in forms(tid) | forms(sid) if f in repr(tok) + repr(sub)]
