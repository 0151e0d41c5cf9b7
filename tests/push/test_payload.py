"""Push payloads (spec §5.5–5.7): exact field names, encryption the app can open, bodies within 4096 bytes."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer, b64u_decode, b64u_encode
from ntf_server.push import payload
from ntf_server.store.records import Notice

SECRET = bytes(range(32))
NONCE = bytes(range(24))
PRESET = SMPServer.from_uri("smp://u2dS9sG8nMNURyZwqASV4yROM28Er0luVTx5X1CsMrU=@smp4.simplex.im")


def item(server: SMPServer = PRESET, t: int = 1700000000) -> Notice:
    return Notice(server, os.urandom(24), t * 1000, os.urandom(24), os.urandom(144))


def test_pn_message_text_form() -> None:
    srv = SMPServer(("localhost",), "5001", b64u_decode("LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI="))
    m = Notice(srv, b"\x22" * 24, 1700000000_000, bytes(range(1, 25)), b"3" * 144)
    assert payload.notice_text(m) == (
        "smp://LcJUMfVhwD8yxjAiSaDzzGF3-kLG4Uh0Fl_ZIjrRwjI=@localhost:5001/IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi "
        "1700000000 AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY " + b64u_encode(b"3" * 144)
    )
    assert payload.encode_pn_messages([m, m]).count(b";") == 1


def test_verification_body_shape_and_decryption() -> None:
    code = os.urandom(32)
    body = payload.verification_body(SECRET, NONCE, code)
    obj = json.loads(body)
    assert obj["aps"] == {"content-available": 1}
    assert set(obj["notificationData"]) == {"nonce", "verification"}
    enc = b64u_decode(obj["notificationData"]["verification"])
    assert len(enc) == 16 + payload.PADDED_LEN
    assert crypto.cb_decrypt(SECRET, b64u_decode(obj["notificationData"]["nonce"]), enc) == code
    assert len(body) <= 4096


def test_message_alert_body_shape_and_content() -> None:
    items = [item(t=1700000000 + i) for i in range(6)]
    body = payload.message_alert_body(SECRET, NONCE, items)
    obj = json.loads(body)
    assert obj["aps"] == {"mutable-content": 1, "alert": payload.ALERT_TEXT, "category": "NTF_CAT_CHECK_MESSAGE"}
    text = crypto.cb_decrypt(SECRET, NONCE, b64u_decode(obj["notificationData"]["message"]))
    assert text.decode().split(";") == [payload.notice_text(i) for i in items]
    assert len(body) <= 4096


def test_hidden_and_periodic_bodies() -> None:
    obj = json.loads(payload.message_background_body(SECRET, NONCE, [item()]))
    assert obj["aps"] == {"content-available": 1} and obj["notificationData"]["checkMessages"] is True
    periodic = json.loads(payload.check_messages_body(SECRET, NONCE))
    assert periodic["aps"] == {"content-available": 1}
    assert set(periodic["notificationData"]) == {"checkMessages", "message", "nonce"}
    assert periodic["notificationData"]["checkMessages"] is True  # all today's app reads from it (§5.5 item 3)
    enc = b64u_decode(periodic["notificationData"]["message"])
    assert len(enc) == 16 + payload.PADDED_LEN and crypto.cb_decrypt(SECRET, NONCE, enc) == b""


def test_a_periodic_push_carries_the_newest_notifications_when_there_are_some() -> None:
    items = [item(t=1700000000 + i) for i in range(8)]
    obj = json.loads(payload.check_messages_body(SECRET, NONCE, items))
    text = crypto.cb_decrypt(SECRET, NONCE, b64u_decode(obj["notificationData"]["message"]))
    assert text.decode().split(";") == [payload.notice_text(i) for i in items[-6:]]


def test_every_message_push_has_the_same_size() -> None:
    sizes = {len(payload.message_alert_body(SECRET, NONCE, [item() for _ in range(n)])) for n in range(1, 7)}
    assert len(sizes) == 1


def test_oldest_items_are_dropped_when_hosts_are_long() -> None:
    hosts = tuple(f"{'h' * 60}{i}.example.com" for i in range(4))
    big = SMPServer(hosts, "5223", b"\x01" * 32)
    items = [item(big, 1700000000 + i) for i in range(6)]
    text = payload.fit_pn_messages(items)
    kept = text.decode().split(";")
    assert 1 <= len(kept) < 6
    assert kept[-1] == payload.notice_text(items[-1])  # the notification that caused the push always stays
    assert len(text) <= payload.PADDED_LEN - 2


@settings(max_examples=30)
@given(st.integers(1, 6), st.integers(1, 4))
def test_bodies_never_exceed_apples_limit(n: int, nhosts: int) -> None:
    srv = SMPServer(tuple(f"smp{i}.{'x' * 40}.example" for i in range(nhosts)), "443", b"\x07" * 32)
    items = [item(srv) for _ in range(n)]
    for body in (payload.message_alert_body(SECRET, NONCE, items),
                 payload.message_background_body(SECRET, NONCE, items)):
        assert len(body) <= 4096


ONION = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=56, max_size=56).map(lambda h: h + ".onion")
DNS = st.from_regex(r"[a-z0-9]{1,40}(\.[a-z0-9]{1,20}){1,3}", fullmatch=True)
SERVERS = st.builds(
    SMPServer,
    st.lists(st.one_of(ONION, DNS), min_size=1, max_size=4).map(tuple),
    st.sampled_from(["", "5223", "443", "65535"]),
    st.binary(min_size=32, max_size=32),
)


def kinds(items: list[Notice]) -> dict[str, bytes]:
    """One body of every push kind, for the same token and notifications."""
    return {
        "verification": payload.verification_body(SECRET, NONCE, os.urandom(32)),
        "alert": payload.message_alert_body(SECRET, NONCE, items),
        "hidden": payload.message_background_body(SECRET, NONCE, items),
        "periodic": payload.check_messages_body(SECRET, NONCE, items),
        "periodic, nothing yet": payload.check_messages_body(SECRET, NONCE),
    }


def ciphertext(body: bytes) -> bytes:
    data = json.loads(body)["notificationData"]
    return b64u_decode(data.get("message") or data["verification"])


@settings(max_examples=60, deadline=None)
@given(st.lists(SERVERS, min_size=1, max_size=6), st.integers(1, 6))
def test_every_push_kind_has_one_ciphertext_length_and_fits_apple(servers: list[SMPServer], n: int) -> None:
    """Any SMP servers (long .onion host lists, ports), 1-6 notifications: one ciphertext length for all kinds,
    every body <= 4096 bytes, and the notification that caused the push is always in it."""
    items = [item(servers[i % len(servers)], 1700000000 + i) for i in range(n)]
    bodies = kinds(items)
    assert {len(ciphertext(b)) for b in bodies.values()} == {16 + payload.PADDED_LEN}
    assert max(len(b) for b in bodies.values()) <= payload.MAX_BODY
    last = crypto.cb_decrypt(SECRET, NONCE, ciphertext(bodies["hidden"])).decode().split(";")[-1]
    assert last == payload.notice_text(items[-1])


def test_the_largest_case_six_notifications_from_servers_with_long_host_lists() -> None:
    hosts = (*(f"{c * 56}.onion" for c in "abc"), "smp-relay-with-a-long-name.example.com")
    items = [item(SMPServer(hosts, "65535", bytes([i]) * 32), 1700000000 + i) for i in range(6)]
    bodies = kinds(items)
    sizes = {k: len(b) for k, b in bodies.items()}
    assert max(sizes.values()) <= payload.MAX_BODY
    assert len({len(ciphertext(b)) for b in bodies.values()}) == 1
    # bodies differ only by each kind's fixed JSON keys (alert aps keys; checkMessages; verification)
    assert sizes == {"verification": 4017, "alert": 4094, "hidden": 4033, "periodic": 4033,
                     "periodic, nothing yet": 4033}


@pytest.mark.parametrize("hidden", [True, False])
def test_message_bodies_are_byte_for_byte_what_json_dumps_writes(hidden: bool) -> None:
    """Bodies are joined from a template (push/payload.py): the same bytes as the dict through json.dumps."""
    key, nonce = os.urandom(32), os.urandom(24)
    body = payload.message_body(key, [item()], hidden=hidden, nonce=nonce)
    parsed = json.loads(body)
    assert json.dumps(parsed, separators=(",", ":")).encode() == body
    assert parsed["notificationData"]["nonce"] == b64u_encode(nonce)
    assert ("checkMessages" in parsed["notificationData"]) is hidden
