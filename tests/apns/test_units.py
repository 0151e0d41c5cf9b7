"""Pure parts of apns/: payload validation, JWT minting and refresh timing, outcome table, HPACK blocks."""

from __future__ import annotations

import hpack
import jwt as pyjwt
import pytest
from apns_helpers import new_token
from hypothesis import given, strategies as st

from apns.errors import Kind, Permanent, classify, parse_error_body
from apns.headers import BlockEncoder, request_block
from apns.jwt import TokenProvider, generate_test_key
from apns.payload import Notification, PushType

# -- payload ---------------------------------------------------------------------------------------------


def test_background_defaults_to_priority_5_and_rejects_10() -> None:
    n = Notification(new_token(), {"aps": {"content-available": 1}}, PushType.BACKGROUND)
    assert n.priority == 5
    with pytest.raises(Permanent, match="priority 5"):
        Notification(new_token(), {"aps": {}}, PushType.BACKGROUND, priority=10)


def test_payload_limits_4096_and_5120_for_voip() -> None:
    fits = {"x": "a" * (4096 - 8)}  # {"x":"..."} is 8 bytes of JSON around the string
    assert len(Notification(new_token(), fits).body) == 4096
    too_big = {"x": "a" * (4096 - 7)}
    with pytest.raises(Permanent, match="4097 bytes, over the 4096-byte limit"):
        Notification(new_token(), too_big)
    assert len(Notification(new_token(), too_big, PushType.VOIP).body) == 4097
    with pytest.raises(Permanent, match="5120"):
        Notification(new_token(), {"x": "a" * 5200}, PushType.VOIP)
    with pytest.raises(Permanent, match="empty"):
        Notification(new_token(), b"")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"collapse_id": "c" * 65}, "collapse id"),
        ({"priority": 7}, "priority"),
        ({"apns_id": "not-a-uuid"}, "UUID"),
        ({"expiration": -1}, "expiration"),
        ({"topic": ""}, "topic"),
    ],
)
def test_invalid_fields_rejected_before_sending(kw: dict[str, object], match: str) -> None:
    with pytest.raises(Permanent, match=match):
        Notification(new_token(), {"aps": {}}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["", "abc", "zz" * 32, "ab cd"])
def test_bad_device_token_rejected(token: str) -> None:
    with pytest.raises(Permanent, match="device token"):
        Notification(token, {"aps": {}})


def test_repr_hides_device_token_and_payload() -> None:
    tok = new_token()
    n = Notification(tok, {"secret": "s3cr3t"})
    assert tok not in repr(n) and "s3cr3t" not in repr(n)
    assert n.token_hint in repr(n)


# -- JWT -------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_jwt_has_kid_iss_iat_and_verifies() -> None:
    key = generate_test_key("ABCDE12345", "TEAM123456")
    clock = FakeClock()
    tok = TokenProvider(key, clock=clock).header()
    assert tok.startswith(b"bearer ")
    raw = tok[7:].decode()
    assert pyjwt.get_unverified_header(raw) == {"alg": "ES256", "kid": "ABCDE12345"}
    claims = pyjwt.decode(raw, key.public_key_pem(), algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": "TEAM123456", "iat": int(clock.t)}


def test_jwt_reused_then_refreshed_before_60_min() -> None:
    clock = FakeClock()
    p = TokenProvider(generate_test_key(), clock=clock)
    first = p.header()
    clock.t += 49 * 60
    assert p.header() is first and p.minted == 1
    clock.t += 60
    second = p.header()
    assert second != first and p.minted == 2
    clock.t += 19 * 60  # never more often than every 20 minutes
    assert p.header() is second


def test_refresh_interval_must_be_within_apples_window() -> None:
    for bad in (10 * 60, 60 * 60, 90 * 60):
        with pytest.raises(ValueError):
            TokenProvider(generate_test_key(), refresh_after_s=bad)


def test_forced_refresh_happens_once_per_generation() -> None:
    clock = FakeClock()
    p = TokenProvider(generate_test_key(), clock=clock)
    p.header()
    seen = p.generation
    for _ in range(50):  # fifty requests failed with ExpiredProviderToken at once
        p.force_refresh(seen)
    assert p.minted == 2 and p.generation == seen + 1


def test_one_token_shared_by_every_connection_of_a_key() -> None:
    p = TokenProvider(generate_test_key(), clock=FakeClock())
    assert len({p.header() for _ in range(100)}) == 1


# -- outcomes --------------------------------------------------------------------------------------------

APPLE_TABLE = {
    (400, "BadCollapseId"): Kind.PERMANENT,
    (400, "BadDeviceToken"): Kind.TOKEN,
    (400, "BadExpirationDate"): Kind.PERMANENT,
    (400, "BadMessageId"): Kind.PERMANENT,
    (400, "BadPriority"): Kind.PERMANENT,
    (400, "BadTopic"): Kind.PERMANENT,
    (400, "DeviceTokenNotForTopic"): Kind.TOKEN,
    (400, "DuplicateHeaders"): Kind.PERMANENT,
    (400, "IdleTimeout"): Kind.RETRY,
    (400, "InvalidPushType"): Kind.PERMANENT,
    (400, "MissingDeviceToken"): Kind.PERMANENT,
    (400, "MissingTopic"): Kind.PERMANENT,
    (400, "PayloadEmpty"): Kind.PERMANENT,
    (400, "TopicDisallowed"): Kind.PERMANENT,
    (403, "BadCertificate"): Kind.AUTH,
    (403, "BadCertificateEnvironment"): Kind.AUTH,
    (403, "ExpiredProviderToken"): Kind.REFRESH,
    (403, "Forbidden"): Kind.AUTH,
    (403, "InvalidProviderToken"): Kind.REFRESH,
    (403, "MissingProviderToken"): Kind.AUTH,
    (403, "UnrelatedKeyIdInToken"): Kind.AUTH,
    (403, "BadEnvironmentKeyIdInToken"): Kind.AUTH,
    (404, "BadPath"): Kind.PERMANENT,
    (405, "MethodNotAllowed"): Kind.PERMANENT,
    (410, "ExpiredToken"): Kind.TOKEN,
    (410, "Unregistered"): Kind.TOKEN,
    (413, "PayloadTooLarge"): Kind.PERMANENT,
    (429, "TooManyProviderTokenUpdates"): Kind.RETRY,
    (429, "TooManyRequests"): Kind.RETRY,
    (500, "InternalServerError"): Kind.RETRY,
    (503, "ServiceUnavailable"): Kind.RETRY,
    (503, "Shutdown"): Kind.RETRY,
    (410, "SomethingNew"): Kind.TOKEN,
    (502, "SomethingNew"): Kind.RETRY,
    (403, "SomethingNew"): Kind.AUTH,
    (400, "SomethingNew"): Kind.PERMANENT,
}


@pytest.mark.parametrize(("status_reason", "kind"), APPLE_TABLE.items())
def test_every_apple_reason_has_an_outcome(status_reason: tuple[int, str], kind: str) -> None:
    assert classify(*status_reason) == kind


def test_error_body_parsing_tolerates_junk() -> None:
    assert parse_error_body(b'{"reason":"Unregistered","timestamp":1700000000000}') == (
        "Unregistered",
        1700000000000,
    )
    assert parse_error_body(b"<html>bad gateway</html>") == ("UnparsableErrorBody", None)
    assert parse_error_body(b"[]") == ("UnparsableErrorBody", None)
    assert parse_error_body(b'{"timestamp":true}') == ("MissingReason", None)


# -- HPACK blocks ----------------------------------------------------------------------------------------

PSEUDO = ((b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.push.apple.com"))


def _constant(auth: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"authorization", auth), (b"apns-topic", b"chat.simplex.app"), (b"apns-push-type", b"alert"))


@given(
    tokens=st.lists(st.binary(min_size=1, max_size=200).map(bytes.hex), min_size=1, max_size=20),
    auths=st.lists(st.sampled_from([b"bearer A" * 30, b"bearer B" * 30, b"bearer C" * 30]), min_size=20),
    collapse=st.binary(max_size=200),
)
def test_blocks_decode_to_the_headers_in_order(tokens: list[str], auths: list[bytes], collapse: bytes) -> None:
    enc, dec = BlockEncoder(), hpack.Decoder()
    for token, auth in zip(tokens, auths, strict=False):
        path = b"/3/device/" + token.encode()
        per_push = [(b"apns-id", b"0f0e0d0c-0b0a-0908-0706-050403020100"), (b"apns-collapse-id", collapse)]
        block = request_block(enc, PSEUDO, path, _constant(auth), per_push)
        got = dec.decode(block, raw=True)
        assert got == [*PSEUDO, (b":path", path), *_constant(auth), *per_push]


def test_constant_headers_indexed_per_push_headers_never_enter_the_table() -> None:
    enc, dec = BlockEncoder(), hpack.Decoder()
    auth = b"bearer " + b"j" * 190
    sizes = []
    for i in range(3):
        path = b"/3/device/" + bytes([i + 48]) * 64
        block = request_block(enc, PSEUDO, path, _constant(auth), [(b"apns-id", b"x" * 36)])
        dec.decode(block, raw=True)
        sizes.append(len(block))
    assert sizes[1] == sizes[2] < sizes[0] - 150  # the JWT went once, then as a one-byte index
    table = [entry for entry in dec.header_table.dynamic_entries]
    assert all(name not in (b":path", b"apns-id") for name, _ in table)
    assert (b"authorization", auth) in table


def test_table_size_change_is_signalled_in_the_next_block() -> None:
    enc, dec = BlockEncoder(), hpack.Decoder()
    for _ in range(2):
        dec.decode(request_block(enc, PSEUDO, b"/3/device/aa", _constant(b"bearer x"), []), raw=True)
    enc.header_table_size = 256  # the peer shrank its table (SETTINGS_HEADER_TABLE_SIZE)
    dec.max_allowed_table_size = 256
    block = request_block(enc, PSEUDO, b"/3/device/aa", _constant(b"bearer x"), [])
    assert block[0] & 0xE0 == 0x20  # dynamic table size update first
    assert dec.decode(block, raw=True)[3] == (b":path", b"/3/device/aa")


def test_encode_without_prepared_block_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        BlockEncoder().encode([])


# -- the fast request path equals h2's own -------------------------------------------------------------


def test_fast_request_matches_h2_byte_for_byte_and_state_for_state() -> None:
    import h2.config
    import h2.events

    from apns.h2fast import FastH2

    def fresh() -> FastH2:
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        conn = FastH2(cfg, lambda: 0)
        conn.initiate_connection()
        conn.send_headers(1, [(b":method", b"POST"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"a")])
        conn.send_data(1, b"{}", end_stream=True)
        conn.data_to_send()
        return conn

    block = request_block(BlockEncoder(), PSEUDO, b"/3/device/ab", _constant(b"bearer x"), [])
    body = b'{"aps":{"content-available":1}}'
    slow, fast = fresh(), fresh()
    enc = BlockEncoder()
    enc.prepare(block)
    slow.encoder = enc  # type: ignore[assignment]
    slow.send_headers(3, [(b":method", b"POST")])
    slow.send_data(3, body, end_stream=True)
    assert fast.fast_request(3, block, body)
    assert fast.data_to_send() == slow.data_to_send()
    for attr in ("state", "client", "headers_sent"):
        assert getattr(fast.streams[3].state_machine, attr) == getattr(slow.streams[3].state_machine, attr)
    assert fast.streams[3].outbound_flow_control_window == slow.streams[3].outbound_flow_control_window
    assert fast.outbound_flow_control_window == slow.outbound_flow_control_window
    assert fast.highest_outbound_stream_id == slow.highest_outbound_stream_id == 3
    assert fast.streams[3].request_method == slow.streams[3].request_method == b"POST"
    # and both accept the reply the same way
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    reply = server.data_to_send()
    for conn in (slow, fast):
        conn.receive_data(reply)
    assert not fast.fast_request(5, block, b"x" * (fast.max_outbound_frame_size + 1))  # too big: h2's path


def test_a_long_lived_connection_remembers_a_bounded_number_of_closed_streams() -> None:
    """h2 remembers every closed stream id up to 65,536 of them (~270 B each: ~17 MB per APNs connection,
    seen as RSS growing for the first hours of a soak run); a few more than APNs' 1,000 concurrent streams
    is enough to treat a late frame on a just-closed stream as h2 does."""
    import h2.config
    import h2.connection

    from apns.h2fast import FastH2

    cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    client = FastH2(cfg, lambda: 0)
    client.initiate_connection()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    block = request_block(BlockEncoder(), PSEUDO, b"/3/device/ab", _constant(b"bearer x"), [])
    client.send_headers(1, [(b":method", b"POST"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"a")])
    client.send_data(1, b"{}", end_stream=True)  # the first request opens the connection state (h2's path)
    for sid in range(1, 2 * 3000, 2):
        assert sid == 1 or client.fast_request(sid, block, b"{}")
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())
    assert len(client._closed_streams) <= 2048  # of 3,000 closed
