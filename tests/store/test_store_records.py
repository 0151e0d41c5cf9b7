"""Status texts exactly as spec §4.2, provider codes, redacted reprs, key file handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.store_helpers import notifier_key, server, token

from ntf_server.store.atrest import AtRest, load_or_create_store_key
from ntf_server.store.errors import StoreError
from ntf_server.store.records import (
    InvalidReason,
    Notice,
    PushProvider,
    SubscriptionRecord,
    SubStatus,
    SubStatusKind,
    TokenStatus,
    TokenStatusKind,
)

TOKEN_TEXTS = [
    "NEW", "REGISTERED", "INVALID", "INVALID,BAD", "INVALID,TOPIC", "INVALID,EXPIRED",
    "INVALID,UNREGISTERED", "CONFIRMED", "ACTIVE", "EXPIRED",
]  # fmt: skip
SUB_TEXTS = ["NEW", "PENDING", "ACTIVE", "INACTIVE", "END", "DELETED", "AUTH", "SERVICE", "ERR SMP error QUOTA"]


@pytest.mark.parametrize("text", TOKEN_TEXTS)
def test_token_status_text_round_trip(text: str) -> None:
    assert TokenStatus.from_text(text).to_text() == text


def test_invalid_reason_dropped_below_v3() -> None:
    st = TokenStatus(TokenStatusKind.INVALID, InvalidReason.TOPIC)
    assert st.to_text(with_reason=False) == "INVALID"
    assert st.to_text() == "INVALID,TOPIC"


@pytest.mark.parametrize("text", ["", "ACTIVE,BAD", "INVALID,", "INVALID,NOPE", "active", "NEW "])
def test_token_status_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        TokenStatus.from_text(text)


@pytest.mark.parametrize("text", SUB_TEXTS)
def test_sub_status_text_round_trip(text: str) -> None:
    assert SubStatus.from_text(text).to_text() == text


@pytest.mark.parametrize("text", ["", "ERR", "ERR ", "OK", "pending"])
def test_sub_status_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        SubStatus.from_text(text)


def test_sub_error_text_is_cut_to_what_the_store_keeps() -> None:
    st = SubStatus.error("x" * 1000)
    assert st.kind is SubStatusKind.ERR and len(st.to_text()) == 4 + 200


def test_provider_wire_codes() -> None:
    assert [p.value for p in PushProvider] == ["AP", "AD", "AT", "AN"]
    assert PushProvider.from_code(b"AD") is PushProvider.APNS_DEV
    with pytest.raises(ValueError):
        PushProvider.from_code("XX")


def test_reprs_hide_secrets() -> None:
    t = token()
    nid, key = b"N" * 24, notifier_key()
    sub = SubscriptionRecord(b"S" * 24, t.token_id, server(), nid, key, SubStatus(SubStatusKind.NEW))
    ln = Notice(server(), nid, 1_700_000_000_123, b"\x01" * 24, b"\x02" * 144)
    assert ln.received_at == 1_700_000_000
    for r in (repr(t), repr(sub), repr(ln)):
        for secret in (t.device_token, t.token_id, nid, b"S" * 24):
            assert secret.decode(errors="ignore") not in r and secret.hex() not in r and repr(secret) not in r


def test_key_file_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "store.key"
    key = load_or_create_store_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_store_key(path) == key


def test_key_file_with_open_permissions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    load_or_create_store_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        load_or_create_store_key(path)


def test_corrupted_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    path.write_text("hello\n")
    os.chmod(path, 0o600)
    with pytest.raises(StoreError, match="not a valid"):
        load_or_create_store_key(path)


def test_sealed_values_are_bound_to_their_record() -> None:
    a = AtRest(b"k" * 32)
    sealed = a.seal(b"secret", b"dt" + b"1" * 24)
    assert a.open(sealed, b"dt" + b"1" * 24) == b"secret"
    with pytest.raises(StoreError):
        a.open(sealed, b"dt" + b"2" * 24)  # copied to another token
    with pytest.raises(StoreError):
        AtRest(b"j" * 32).open(sealed, b"dt" + b"1" * 24)  # another key
