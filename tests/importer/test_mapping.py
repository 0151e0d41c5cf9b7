"""Haskell columns → our records, one rule at a time (pure; no database), and the progress output."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os

import pytest
from helpers.haskell_data import ed25519_pair, server_row, token_row

from ntf_server.importer import mapping as M
from ntf_server.importer.progress import Progress
from ntf_server.observability.logevents import event_of
from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.protocol.ntf_types import InvalidReason, PushProvider, SubStatusKind
from ntf_server.store.importing import ImportedNotification
from ntf_server.store.records import SubscriptionRecord, TokenRecord, day_of

NOW = 1_780_000_000.0
RNG = __import__("random").Random(1)


def a_token(**changes: object) -> M.TokenRow:
    import dataclasses

    return dataclasses.replace(token_row(RNG, status="ACTIVE", provider="apns_prod", verify_key=ed25519_pair()[1]),
                               **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["NEW", "REGISTERED", "CONFIRMED", "ACTIVE", "EXPIRED", "INVALID", "INVALID,BAD",
                                  "INVALID,TOPIC", "INVALID,EXPIRED", "INVALID,UNREGISTERED"])
def test_every_token_status_text_is_kept(text: str) -> None:
    rec = M.map_token(a_token(status=text), NOW)
    assert isinstance(rec, TokenRecord) and rec.status.to_text() == text


def test_token_columns() -> None:
    row = a_token(cron_interval=20, cron_sent_at=1_779_999_000, updated_at=None)
    rec = M.map_token(row, NOW)
    assert isinstance(rec, TokenRecord)
    assert rec.provider is PushProvider.APNS_PROD and rec.device_token == row.push_provider_token
    assert rec.verify_key == row.verify_key and rec.dh_private == row.dh_priv_key
    # the public key sent in IDTKN on a repeat TNEW: derived from the stored private key
    priv = crypto.decode_private_key(row.dh_priv_key)
    assert rec.dh_public == crypto.encode_public_key(priv.public_key())
    assert (rec.cron_interval_min, rec.cron_sent_at, rec.last_used_day) == (20, 1_779_999_000, day_of(NOW))
    assert M.map_token(a_token(status="INVALID,BAD"), NOW).status.reason is InvalidReason.BAD  # type: ignore[union-attr]


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "ACTIVE,BAD"}, "unknown token status"),
    ({"push_provider": "fcm"}, "unknown push provider"),
    ({"token_id": bytes(23)}, "token id is not 24 bytes"),
    ({"verify_key": b"junk"}, "verify key"),
    ({"dh_priv_key": ed25519_pair()[0]}, "not an X25519"),
    ({"dh_secret": bytes(31)}, "DH secret"),
    ({"cron_interval": 70000}, "cron interval"),
    ({"push_provider_token": b""}, "device token"),
])
def test_tokens_we_cannot_represent_are_rejected_with_a_reason(change: dict[str, object], reason: str) -> None:
    out = M.map_token(a_token(**change), NOW)
    assert isinstance(out, M.Rejected) and reason in out.reason


def test_servers_keyhash_text_or_raw_port_and_preset_hosts() -> None:
    kh = os.urandom(32)
    s = M.map_server(M.ServerRow(1, "smp8.simplex.im", "", b64u_encode(kh).encode(), None))
    assert isinstance(s, SMPServer) and s.port == "" and s.key_hash == kh and len(s.hosts) == 2  # onion added
    raw = M.map_server(M.ServerRow(2, "a.example,b.example", "5223", kh, None))
    assert isinstance(raw, SMPServer) and raw.hosts == ("a.example", "b.example") and raw.port == "5223"
    addr = SMPServer(("x.example",), "443", kh)
    assert M.map_server(server_row(3, addr)) == addr
    assert isinstance(M.map_server(M.ServerRow(4, "x.example", "port", kh, None)), M.Rejected)


@pytest.mark.parametrize("text", ["NEW", "PENDING", "ACTIVE", "INACTIVE", "END", "DELETED", "AUTH", "SERVICE",
                                  "ERR SMP error QUOTA"])
def test_every_subscription_status_text_is_kept(text: str) -> None:
    server = SMPServer(("x.example",), "", bytes(32))
    row = M.SubRow(os.urandom(24), os.urandom(24), 1, os.urandom(24), ed25519_pair()[0], text, True)
    out = M.map_sub(row, {1: server})
    assert isinstance(out, M.MappedSub) and isinstance(out.record, SubscriptionRecord)
    assert out.record.status.to_text() == text and out.record.sub_id == row.subscription_id
    assert out.record.service_assoc is False and out.notes == ("service association dropped (resubscribed one by one)",)


def test_subscription_rejections_and_long_error_texts() -> None:
    server = SMPServer(("x.example",), "", bytes(32))
    row = M.SubRow(os.urandom(24), os.urandom(24), 1, os.urandom(24), ed25519_pair()[0], "ERR " + "é" * 150, False)
    out = M.map_sub(row, {1: server})
    assert isinstance(out, M.MappedSub) and out.record.status.kind is SubStatusKind.ERR
    assert out.notes == (M.ERR_TEXT_NOTE,)
    import dataclasses

    for change, reason in [({"smp_server_id": None}, "without an SMP server"), ({"smp_server_id": 9}, "without"),
                           ({"status": "GONE"}, "unknown subscription status"),
                           ({"smp_notifier_key": b"junk"}, "notifier key"),
                           ({"smp_notifier_id": b""}, "notifier id")]:
        bad = M.map_sub(dataclasses.replace(row, **change), {1: server})  # type: ignore[arg-type]
        assert isinstance(bad, M.Rejected) and reason in bad.reason
    empty = M.map_sub(dataclasses.replace(row, status="ERR "), {1: server})
    assert isinstance(empty, M.MappedSub) and empty.record.status.to_text() == "ERR ?"
    x448 = crypto.encode_private_key(crypto.generate_x25519())  # another key kind Haskell may store
    assert isinstance(M.map_sub(dataclasses.replace(row, smp_notifier_key=x448), {1: server}), M.MappedSub)


def test_last_notifications_times_and_the_newest_six() -> None:
    at = dt.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=dt.UTC)
    n = M.map_notification(M.NtfRow(bytes(24), bytes(24), at, bytes(24), b"m"))
    assert isinstance(n, ImportedNotification) and n.received_at_ms == int(at.timestamp() * 1000)
    assert isinstance(M.map_notification(M.NtfRow(bytes(24), bytes(24), at, bytes(23), b"m")), M.Rejected)
    ntfs = [ImportedNotification(bytes([i]) * 24, 1000 * i, bytes(24), b"") for i in (5, 1, 7, 3, 2, 6, 4, 8)]
    keep, older = M.newest(ntfs)
    assert [k.received_at_ms for k in keep] == [3000, 4000, 5000, 6000, 7000, 8000] and older == 2


def test_progress_is_a_bar_on_a_terminal_and_paced_log_events_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ntf_server.importer.progress")
    t = [0.0]
    out = io.StringIO()
    p = Progress(200, out, tty=False, now=lambda: t[0])
    for _ in range(100):
        t[0] += 0.01
        p.advance(1)
    t[0] = 10.0
    p.advance(100)
    p.finish()
    assert out.getvalue() == ""  # not a terminal: the log has it, with keys
    events = [event_of(r) for r in caplog.records]
    assert [name for name, _ in events] == ["import.progress"] * 3
    assert events[0][1]["done"] == 1 and events[0][1]["rate_per_s"] is None
    assert events[1][1] == {"done": 200, "total": 200, "unit": "tokens", "percent": 100, "rate_per_s": 20,
                            "elapsed_s": 10}
    assert caplog.records[1].getMessage() == "200/200 tokens (100%), 20/s, 10 s"
    bar = io.StringIO()
    p = Progress(4, bar, tty=True, now=lambda: t[0])
    p.advance(2)
    assert bar.getvalue() == "\r[" + "#" * 15 + " " * 15 + "] 2/4 tokens (50%), -/s, 0 s"
    t[0] += 2
    p.advance(2)
    p.finish()
    assert bar.getvalue().endswith("\r[" + "#" * 30 + "] 4/4 tokens (100%), 2/s, 2 s\n")
