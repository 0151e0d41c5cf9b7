"""SMP client handshake (spec §1.8) and session (§1.5–1.6, §2.3–2.4, §3), sans-IO: no sockets.

The server side is the stand-in's pure core (ntf_server/sim/smp_core.py), so every block here is a real
SMP block, encrypted from v11.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st

from ntf_server.protocol import crypto, smp as S, smp_events as E
from ntf_server.protocol.encoding import enc_short, pad
from ntf_server.protocol.error_types import (
    AUTH,
    CmdError,
    CommandError,
    HandshakeError,
    SimpleError,
    TransportError,
    TransportErrorKind,
)
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    SMP_CLIENT_VRANGE,
    SMP_CURRENT_VERSION,
    SMP_SERVER_VRANGE,
    RawTransmission,
    VersionRange,
    decode_block,
    encode_block,
    encode_transmission,
    parse_block,
)
from ntf_server.protocol.handshake import CertChainPubKey, SmpClientHello, SmpServerHello
from ntf_server.protocol.smp_client import SmpHandshake, SmpHandshakeRejected, client_handshake
from ntf_server.protocol.smp_session import (
    CORR_ID_LEN,
    NotifierQueue,
    RandomPool,
    SmpClientSession,
    SmpProtocolError,
)
from ntf_server.sim.smp_core import SOK, Outgoing, SmpServerCore, accept_client_hello, server_hello_block
from ntf_server.transport import certs

SID = bytes(range(32))
DER = serialization.Encoding.DER


@dataclass
class Identity:
    chain: tuple[bytes, bytes]
    leaf_key: crypto.SignPrivateKey
    key_hash: bytes


def make_identity(alg: certs.SignAlgorithm = certs.SignAlgorithm.ED25519) -> Identity:
    ca_key, ca = certs.generate_ca(alg)
    leaf_key, leaf = certs.generate_server_cert(ca_key, ca, "localhost", alg)
    chain = (leaf.public_bytes(DER), ca.public_bytes(DER))
    return Identity(chain, leaf_key, certs.fingerprint(chain[1]))


ID25519 = make_identity()
ID448 = make_identity(certs.SignAlgorithm.ED448)


def hello(identity: Identity = ID25519, versions: VersionRange = SMP_SERVER_VRANGE,
          dh: X25519PrivateKey | None = None) -> bytes:
    return server_hello_block(versions, SID, identity.chain, identity.leaf_key, dh or crypto.generate_x25519())


def shake(block: bytes, identity: Identity = ID25519, **kw: object) -> SmpHandshake:
    args: dict[str, object] = {"key_hash": identity.key_hash, "tls_unique": SID, "peer_chain": list(identity.chain)}
    args.update(kw)
    return client_handshake(block, **args)  # type: ignore[arg-type]


def failure(block: bytes, identity: Identity = ID25519, **kw: object) -> TransportError:
    with pytest.raises(SmpHandshakeRejected) as e:
        shake(block, identity, **kw)
    return e.value.error


# ---------------------------------------------------------------- handshake


@pytest.mark.parametrize("identity", [ID25519, ID448], ids=["ed25519", "ed448"])
@pytest.mark.parametrize("max_version", [7, 10, 11, 15, 16, 18, 19, 20, 30])
def test_handshake_picks_the_highest_common_version(identity: Identity, max_version: int) -> None:
    server_dh = crypto.generate_x25519()
    client_dh = crypto.generate_x25519()
    hs = shake(hello(identity, VersionRange(6, max_version), server_dh), identity, client_key=client_dh)
    v = min(max_version, SMP_CURRENT_VERSION)
    assert hs.params.version == v and hs.params.session_id == SID and hs.params.implied_session_id
    assert hs.params.service_auth == (v >= 16)
    assert len(hs.client_hello) == SMP_BLOCK_SIZE
    sent = SmpClientHello.decode(hs.client_hello[2 : 2 + int.from_bytes(hs.client_hello[:2], "big")])
    assert sent == SmpClientHello(v, identity.key_hash, crypto.encode_public_key(client_dh.public_key()))
    assert hs.block_secret == (crypto.dh(server_dh.public_key(), client_dh) if v >= 11 else None)


def test_session_id_must_be_the_tls_channel_binding() -> None:
    assert failure(hello(), tls_unique=bytes(32)) == TransportError(TransportErrorKind.SESSION)


@pytest.mark.parametrize("versions", [VersionRange(6, 6), VersionRange(21, 22), VersionRange(1, 5)])
def test_no_common_version(versions: VersionRange) -> None:
    assert failure(hello(versions=versions)) == TransportError(TransportErrorKind.VERSION)


def test_v7_hello_without_a_chain_cannot_be_pinned() -> None:
    block = pad(SmpServerHello(VersionRange(6, 18), SID, None).encode(), SMP_BLOCK_SIZE)
    assert failure(block) == TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.IDENTITY)


def test_malformed_cert_part_is_a_parse_failure_not_an_absent_chain() -> None:
    """Regression: handshake.py used to read a bad cert part as "no chain" (Haskell ``optional``)."""
    block = pad(VersionRange(6, 18).encode() + enc_short(SID) + b"\x02\x00\x05abc", SMP_BLOCK_SIZE)
    assert failure(block) == TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.PARSE)


def test_chain_of_another_identity_is_rejected() -> None:
    assert failure(hello(ID448), identity=ID25519, peer_chain=list(ID448.chain)) == TransportError(
        TransportErrorKind.HANDSHAKE, HandshakeError.IDENTITY)


def test_handshake_leaf_must_be_the_tls_leaf() -> None:
    other = make_identity()
    assert failure(hello(), peer_chain=list(other.chain)) == TransportError(
        TransportErrorKind.HANDSHAKE, HandshakeError.IDENTITY)
    assert failure(hello(), peer_chain=[]).kind is TransportErrorKind.HANDSHAKE


def test_certificate_validity_is_checked_at_the_given_time() -> None:
    past = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert failure(hello(), now=past) == TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.IDENTITY)
    assert shake(hello(), now=dt.datetime.now(dt.UTC)).params.version == SMP_CURRENT_VERSION


def test_session_key_signed_by_another_key_is_bad_auth() -> None:
    dh = crypto.generate_x25519()
    forged = crypto.signed_exact(crypto.signed_key_tbs(dh.public_key()), crypto.generate_ed25519())
    block = pad(SmpServerHello(VersionRange(6, 18), SID, CertChainPubKey(ID25519.chain, forged)).encode(),
                SMP_BLOCK_SIZE)
    assert failure(block) == TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.BAD_AUTH)


def test_short_or_garbage_hello_block() -> None:
    assert failure(hello()[:-1]).handshake is HandshakeError.PARSE
    assert failure(b"\xff" * SMP_BLOCK_SIZE).handshake is HandshakeError.PARSE


# ---------------------------------------------------------------- a client session against the core


class Pair:
    """A client session and the stand-in core's server session, connected in memory."""

    def __init__(self, max_version: int = 18, random: Callable[[int], bytes] | None = None) -> None:
        server_dh = crypto.generate_x25519()
        hs = shake(hello(versions=VersionRange(6, max_version), dh=server_dh))
        self.server = accept_client_hello(hs.client_hello, 1, versions=VersionRange(6, max_version),
                                          key_hash=ID25519.key_hash, session_id=SID, dh_key=server_dh)
        self.core = SmpServerCore()
        self.client = SmpClientSession(hs, now=0.0, **({"random": random} if random else {}))

    def queue(self, key: crypto.PrivateAuthKey | None = None) -> tuple[NotifierQueue, bytes]:
        key = key or crypto.generate_ed25519()
        secret = bytes(32)
        return NotifierQueue(self.core.create_queue(crypto.public_of(key), secret), key), secret

    def to_server(self, blocks: list[bytes]) -> list[Outgoing]:
        return [o for b in blocks for o in self.core.receive_block(self.server, b)]

    def to_client(self, out: list[Outgoing], now: float = 1.0) -> list[E.SmpEvent]:
        return [e for b in self.server.encode(out) for e in self.client.receive_block(b, now=now)]

    def raw_from_client(self, blocks: list[bytes]) -> list[RawTransmission]:
        """What the server would parse (advances the server's receive chain: use instead of to_server)."""
        return [t for b in blocks for t in parse_block(self.server.params, self.server.open(b))
                if isinstance(t, RawTransmission)]

    def answer(self, corr_id: bytes, entity: bytes, command: bytes) -> list[E.SmpEvent]:
        t = encode_transmission(self.server.params, corr_id, entity, command)
        return self.client.receive_block(self.server.seal(b"\x01" + len(t).to_bytes(2, "big") + t), now=1.0)


@pytest.mark.parametrize("version", SMP_CLIENT_VRANGE.all())
@pytest.mark.parametrize("key_maker", [crypto.generate_ed25519, Ed448PrivateKey.generate, crypto.generate_x25519],
                         ids=["ed25519", "ed448", "x25519"])
def test_nsub_accepted_by_a_strict_server(version: int, key_maker: Callable[[], crypto.PrivateAuthKey]) -> None:
    p = Pair(version)
    q, _ = p.queue(key_maker())
    events = p.to_client(p.to_server(p.client.subscribe([q])))
    assert events == [E.Subscribed(q.notifier_id)]
    assert p.client.state(q.notifier_id) is E.QueueState.ACTIVE
    assert p.core.queues[q.notifier_id].subscriber == 1


def test_nsub_wire_size_matches_the_spec_example() -> None:
    """§3.1: v18, Ed25519, 24-byte ids: 120-byte transmission (with the '0' service slot); 134 per block."""
    p = Pair(18)
    queues = [p.queue()[0] for _ in range(135)]
    [t] = p.raw_from_client(p.client.subscribe(queues[:1]))
    assert len(encode_transmission(p.server.params, t.corr_id, t.entity_id, t.command, auth=t.auth)) == 120
    assert t.command == b"NSUB" and t.service_sig is None and len(t.auth) == 64
    assert len(p.client.subscribe(queues[1:135])) == 1
    p2 = Pair(18)
    assert len(p2.client.subscribe([p2.queue()[0] for _ in range(135)])) == 2


def test_x25519_authenticator_is_80_bytes_and_bound_to_the_session() -> None:
    p = Pair(18)
    q, _ = p.queue(crypto.generate_x25519())
    [t] = p.raw_from_client(p.client.subscribe([q]))
    assert len(t.auth) == crypto.AUTHENTICATOR_LEN
    other = crypto.generate_x25519()  # another session's server key cannot check it
    assert not crypto.verify_transmission_auth(crypto.public_of(q.key), t.auth, t.authorized, t.corr_id, other)
    assert crypto.verify_transmission_auth(crypto.public_of(q.key), t.auth, t.authorized, t.corr_id,
                                           p.server.dh_key)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_tampered_nsub_auth_is_err_auth(data: st.DataObject) -> None:
    """The core checks every NSUB (Ed25519 through libsodium, X25519 authenticators, Ed448): any bit flipped in
    the auth, or in what it covers, answers ERR AUTH and subscribes nothing; the NSUB as sent subscribes."""
    p = Pair(10)  # no block encryption: the client's block can be rewritten
    key = data.draw(st.sampled_from([crypto.generate_ed25519, crypto.generate_x25519, Ed448PrivateKey.generate]))()
    q, _ = p.queue(key)
    [t] = [x for b in p.client.subscribe([q]) for x in parse_block(p.server.params, decode_block(b, SMP_BLOCK_SIZE))]
    assert isinstance(t, RawTransmission)

    def send(corr_id: bytes, auth: bytes) -> list[Outgoing]:
        sent = encode_transmission(p.server.params, corr_id, t.entity_id, t.command, auth=auth)
        block = encode_block(b"\x01" + len(sent).to_bytes(2, "big") + sent, SMP_BLOCK_SIZE)
        return p.core.receive_block(p.server, block)

    bit = data.draw(st.integers(0, len(t.auth) * 8 - 1))
    bad_auth = bytearray(t.auth)
    bad_auth[bit // 8] ^= 1 << (bit % 8)
    assert send(t.corr_id, bytes(bad_auth)) == [Outgoing(1, t.corr_id, q.notifier_id, S.SmpErr(AUTH))]
    bad_corr = bytes((t.corr_id[0] ^ 1,)) + t.corr_id[1:]  # covered by the signature (and the authenticator's nonce)
    assert send(bad_corr, t.auth) == [Outgoing(1, bad_corr, q.notifier_id, S.SmpErr(AUTH))]
    assert p.core.queues[q.notifier_id].subscriber is None
    assert send(t.corr_id, t.auth) == [Outgoing(1, t.corr_id, q.notifier_id, SOK)]
    assert p.core.queues[q.notifier_id].subscriber == 1


@pytest.mark.parametrize("version", SMP_CLIENT_VRANGE.all())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=SMP_BLOCK_SIZE * 3), max_size=8))
def test_fragmented_input_gives_the_same_events(version: int, cuts: list[int]) -> None:
    """Whole blocks, arbitrary fragments, byte runs: the events are the same (and encrypted chains agree)."""
    p = Pair(version)
    queues = [p.queue()[0] for _ in range(3)]
    out = p.to_server(p.client.subscribe(queues))
    out += [o for q in queues for o in p.core.notify(q.notifier_id, S.NMsgMeta(b"id", 1))]
    out += p.core.delete_queue(queues[0].notifier_id)
    stream = b"".join(p.server.encode(out[:3]) + p.server.encode(out[3:]))
    events: list[E.SmpEvent] = []
    pos = 0
    for c in sorted(set(cuts)):
        events += p.client.receive_data(stream[pos:c], now=1.0)
        pos = max(pos, min(c, len(stream)))
    events += p.client.receive_data(stream[pos:], now=1.0)
    assert [type(e) for e in events] == [E.Subscribed] * 3 + [E.Message] * 3 + [E.Deleted if version >= 10 else E.Ended]


def test_partial_block_waits_and_byte_by_byte_works() -> None:
    p = Pair(11)
    q, _ = p.queue()
    [block] = p.server.encode(p.to_server(p.client.subscribe([q])))
    assert p.client.receive_data(block[:-1], now=1.0) == []
    assert p.client.receive_data(block[-1:], now=1.0) == [E.Subscribed(q.notifier_id)]
    p.client.ping()  # a second round, one byte at a time
    [pong_block] = p.server.encode([Outgoing(1, b"", b"", S.SmpPong())])
    events = [e for i in range(SMP_BLOCK_SIZE) for e in p.client.receive_data(pong_block[i : i + 1], now=2.0)]
    assert len(events) == 1 and isinstance(events[0], E.Unexpected)  # PONG without a corrId


def test_pending_notifications_follow_the_ok_and_keep_their_bytes() -> None:
    p = Pair(18)
    key = crypto.generate_ed25519()
    recipient = crypto.generate_x25519()
    server_ntf = crypto.generate_x25519()
    secret = crypto.dh(server_ntf.public_key(), recipient)
    nid = p.core.create_queue(crypto.public_of(key), secret)
    p.core.notify(nid, S.NMsgMeta(b"m1", 1700000000))
    events = p.to_client(p.to_server(p.client.subscribe([NotifierQueue(nid, key)])))
    assert [type(e) for e in events] == [E.Subscribed, E.Message]
    msg = events[1]
    assert isinstance(msg, E.Message) and msg.state is E.QueueState.ACTIVE
    # Only the recipient can read it; the ntf server forwards nonce and ciphertext as they are (§5.7).
    assert S.decrypt_nmsg_meta(crypto.dh(recipient.public_key(), server_ntf), msg.nonce, msg.enc_meta) == \
        S.NMsgMeta(b"m1", 1700000000)


def test_error_answers_map_to_failure_kinds() -> None:
    p = Pair(18)
    queues = [p.queue()[0] for _ in range(5)]
    ts = p.raw_from_client(p.client.subscribe(queues))
    c = [t.corr_id for t in ts]
    ids = [q.notifier_id for q in queues]
    assert p.answer(c[0], ids[0], b"ERR AUTH") == [E.SubscriptionFailed(ids[0], E.FailureKind.AUTH, AUTH)]
    assert p.answer(c[1], ids[1], b"ERR SERVICE") == [
        E.SubscriptionFailed(ids[1], E.FailureKind.SERVICE, SimpleError("SERVICE"))]
    assert p.answer(c[2], ids[2], b"ERR CMD SYNTAX") == [
        E.SubscriptionFailed(ids[2], E.FailureKind.SMP_ERROR, CmdError(CommandError.SYNTAX))]
    [ev] = p.answer(c[3], ids[3], b"DELD")
    assert isinstance(ev, E.SubscriptionFailed) and ev.kind is E.FailureKind.UNEXPECTED_RESPONSE
    [ev] = p.answer(c[4], ids[4], b"SOK x")
    assert isinstance(ev, E.SubscriptionFailed) and ev.kind is E.FailureKind.BAD_RESPONSE
    assert p.client.queues(E.QueueState.FAILED) == ids and p.client.awaiting() == 0


def test_answers_that_do_not_fit_what_was_asked() -> None:
    p = Pair(18)
    q, _ = p.queue()
    [t] = p.raw_from_client(p.client.subscribe([q]))
    [ev] = p.answer(b"z" * 24, q.notifier_id, b"SOK 0")
    assert isinstance(ev, E.Unexpected) and "unknown corrId" in ev.what
    [ev] = p.answer(t.corr_id, b"another queue", b"SOK 0")  # an OK about a queue we did not ask for
    assert isinstance(ev, E.SubscriptionFailed) and ev.kind is E.FailureKind.UNEXPECTED_RESPONSE
    [ev] = p.answer(b"", q.notifier_id, b"END")  # END for a queue that failed here
    assert isinstance(ev, E.Unexpected)
    [ev] = p.answer(b"", b"", b"ERR BLOCK")
    assert ev == E.ServerError(b"", b"", SimpleError("BLOCK"))
    [ev] = p.answer(b"", q.notifier_id, b"SOKS \x00\x00\x00\x00\x00\x00\x00\x01")
    assert isinstance(ev, E.Unexpected)
    [ev] = p.answer(b"", b"", b"NMSG")  # malformed event
    assert isinstance(ev, E.Unexpected)


def test_ping_answered_by_pong_and_idle_time() -> None:
    p = Pair(18)
    block = p.client.ping()
    p.client.block_written(now=5.0)
    [t] = p.raw_from_client([block])
    assert t.command == b"PING" and t.auth == b"" and t.entity_id == b""
    assert p.client.idle_for(65.0) == 65.0
    assert p.answer(t.corr_id, b"", b"PONG") == [E.Pong()]
    assert p.client.idle_for(65.0) == 64.0  # the PONG arrived at now=1.0
    p.client.ping()
    assert p.client.expire(now=1000.0, timeout_s=30.0) == []  # not written yet: no timeout runs
    p.client.block_written(now=70.0)
    assert p.client.expire(now=99.0, timeout_s=30.0) == []
    assert p.client.expire(now=100.0, timeout_s=30.0) == [E.PingTimedOut()]
    assert p.client.awaiting() == 0


def test_expired_nsub_stays_pending_and_a_late_answer_is_applied() -> None:
    p = Pair(18)
    q, _ = p.queue()
    [t] = p.raw_from_client(p.client.subscribe([q]))
    assert p.client.expire(now=500.0, timeout_s=30.0) == []  # queued, not written: its timeout has not started
    p.client.block_written(now=10.0)
    assert p.client.expire(now=39.0, timeout_s=30.0) == []
    assert p.client.expire(now=40.0, timeout_s=30.0) == [E.SubscriptionTimedOut(q.notifier_id)]
    assert p.client.state(q.notifier_id) is E.QueueState.PENDING and p.client.awaiting() == 0
    assert p.answer(t.corr_id, q.notifier_id, b"SOK 0") == [E.Subscribed(q.notifier_id)]
    assert p.client.state(q.notifier_id) is E.QueueState.ACTIVE
    assert p.client.resend_due(now=1000.0) == []  # answered: nothing to re-send


def test_timed_out_nsub_is_resent_with_backoff_and_every_answer_counts() -> None:
    p = Pair(18)
    q, _ = p.queue()
    [first] = p.raw_from_client(p.client.subscribe([q]))
    p.client.block_written(now=0.0)
    assert p.client.expire(now=30.0, timeout_s=30.0) == [E.SubscriptionTimedOut(q.notifier_id)]
    assert p.client.resend_due(now=30.4) == []  # backoff: 0.5..1 s after the first timeout
    [second] = p.raw_from_client(p.client.resend_due(now=31.0))
    assert second.entity_id == q.notifier_id and second.corr_id != first.corr_id
    assert p.client.resend_due(now=31.0) == [] and p.client.awaiting() == 1
    with pytest.raises(ValueError, match="in flight"):
        p.client.subscribe([q])
    p.client.block_written(now=31.0)
    assert p.client.expire(now=61.0, timeout_s=30.0) == [E.SubscriptionTimedOut(q.notifier_id)]
    assert p.client.resend_due(now=61.9) == []  # second backoff: 1..2 s
    [third] = p.raw_from_client(p.client.resend_due(now=63.0))
    # The first NSUB's late answer is applied, and so is the answer to a re-sent one.
    assert p.answer(first.corr_id, q.notifier_id, b"SOK 0") == [E.Subscribed(q.notifier_id)]
    assert p.answer(third.corr_id, q.notifier_id, b"SOK 0") == [E.Subscribed(q.notifier_id)]
    assert p.client.state(q.notifier_id) is E.QueueState.ACTIVE and p.client.awaiting() == 0


def test_forgotten_queue_is_not_resent_and_unknown_ones_are_told_apart() -> None:
    p = Pair(18)
    q, _ = p.queue()
    p.raw_from_client(p.client.subscribe([q]))
    p.client.block_written(now=0.0)
    p.client.expire(now=30.0, timeout_s=30.0)
    p.client.forget(q.notifier_id)
    assert p.client.resend_due(now=100.0) == [] and p.client.resends_waiting() == 0
    nmsg = b"NMSG " + bytes(24) + b"\x03abc"
    [forgotten] = p.answer(b"", q.notifier_id, nmsg)
    [unknown] = p.answer(b"", b"never subscribed here", nmsg)
    assert isinstance(forgotten, E.Message) and forgotten.state is None  # SDEL'd: the pool counts it
    assert isinstance(unknown, E.Message) and unknown.state is E.QueueState.UNKNOWN  # the store decides


def test_second_nsub_in_flight_is_refused_without_side_effects() -> None:
    p = Pair(18)
    a, _ = p.queue()
    b, _ = p.queue()
    p.client.subscribe([a])
    with pytest.raises(ValueError, match="in flight"):
        p.client.subscribe([b, a])
    with pytest.raises(ValueError, match="in flight"):
        p.client.subscribe([b, b])
    assert p.client.state(b.notifier_id) is None and p.client.awaiting() == 1


def test_forgotten_queue_still_reports_its_messages() -> None:
    p = Pair(18)
    q, _ = p.queue()
    p.to_client(p.to_server(p.client.subscribe([q])))
    p.client.forget(q.notifier_id)
    [ev] = p.to_client(p.core.notify(q.notifier_id, S.NMsgMeta(b"x", 1)))
    assert isinstance(ev, E.Message) and ev.state is None


@pytest.mark.parametrize("version", [10, 11])
def test_garbage_block_is_a_protocol_error(version: int) -> None:
    p = Pair(version)
    with pytest.raises(SmpProtocolError):
        p.client.receive_block(b"\xff" * SMP_BLOCK_SIZE, now=1.0)
    with pytest.raises(SmpProtocolError):
        p.client.receive_block(b"\x00" * 10, now=1.0)


def test_encrypted_blocks_must_be_received_in_order() -> None:
    p = Pair(11)
    q1, _ = p.queue()
    q2, _ = p.queue()
    first = p.server.encode(p.to_server(p.client.subscribe([q1])))
    second = p.server.encode(p.to_server(p.client.subscribe([q2])))
    with pytest.raises(SmpProtocolError):
        p.client.receive_block(second[0], now=1.0)
    assert first  # (the chain is now out of step: the only way on is a new connection)


def test_corr_ids_come_from_the_injected_source() -> None:
    counter = itertools.count()
    p = Pair(18, random=lambda n: next(counter).to_bytes(n, "big"))
    q, _ = p.queue()
    [t] = p.raw_from_client(p.client.subscribe([q]))
    assert t.corr_id == (0).to_bytes(24, "big")


def test_reprs_hide_queue_ids() -> None:
    p = Pair(18)
    q, _ = p.queue()
    p.client.subscribe([q])
    texts = [repr(q), repr(p.client), repr(E.Subscribed(q.notifier_id)),
             repr(E.Message(q.notifier_id, b"n" * 24, b"m" * 144)), repr(E.Ended(q.notifier_id))]
    assert not any(q.notifier_id.hex() in t or repr(q.notifier_id) in t for t in texts)
    assert "1 pending" in repr(p.client)


# ---------------------------------------------------------------- the queue state table


ALL_STATES: list[E.QueueState | None] = [None, *(s for s in E.QueueState if s is not E.QueueState.UNKNOWN)]


@pytest.mark.parametrize("state", ALL_STATES, ids=str)
@pytest.mark.parametrize("event", list(E.QueueEvent), ids=lambda e: e.value)
def test_every_state_event_pair(state: E.QueueState | None, event: E.QueueEvent) -> None:
    ok, new = E.transition(state, event)
    assert ok == ((state, event) in E.QUEUE_TRANSITIONS)
    if not ok:
        assert new == state
    if event is E.QueueEvent.NMSG:
        assert ok and new == state  # a notification never changes a subscription, and is never refused
    if event is E.QueueEvent.SEND_NSUB:  # the session keeps one live NSUB per queue (a timed-out one may wait)
        assert ok and new is E.QueueState.PENDING
    if event in (E.QueueEvent.FAILED, E.QueueEvent.TIMED_OUT):
        assert ok == (state is E.QueueState.PENDING)  # only an NSUB in flight can be answered
    if event is E.QueueEvent.TIMED_OUT:
        assert not ok or new is E.QueueState.PENDING  # never forgotten: it stays pending and is re-sent
    if event is E.QueueEvent.SUBSCRIBED:  # ... or, after a late answer, a re-sent NSUB's answer
        assert ok == (state in (E.QueueState.PENDING, E.QueueState.ACTIVE))
    if event is E.QueueEvent.END:
        assert ok == (state is E.QueueState.ACTIVE) and (not ok or new is E.QueueState.ENDED)
    if event is E.QueueEvent.DELD:
        assert ok == (state in (E.QueueState.PENDING, E.QueueState.ACTIVE))


def test_every_state_is_reachable() -> None:
    reachable: set[E.QueueState | None] = {None}
    for _ in range(len(ALL_STATES)):
        reachable |= {E.QUEUE_TRANSITIONS[k] for k in E.QUEUE_TRANSITIONS if k[0] in reachable}
    assert reachable == set(ALL_STATES)


def test_response_outcomes_cover_each_command() -> None:
    assert {k for k, _ in E.RESPONSE_OUTCOMES} == set(E.CommandKind)


@pytest.mark.parametrize("version", [10, 18, 19, 20])
@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_any_transmission_content_gives_events_not_exceptions(version: int, data: list[bytes]) -> None:
    """Inside a well-formed block, whatever the server puts in a transmission is an event (STYLE 4)."""
    p = Pair(version)
    content = bytes((len(data),)) + b"".join(len(d).to_bytes(2, "big") + d for d in data)
    events = p.client.receive_block(p.server.seal(content), now=1.0)
    assert len(events) == len(data)


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_stand_in_answers_any_transmission(data: list[bytes]) -> None:
    p = Pair(10)
    content = bytes((len(data),)) + b"".join(len(d).to_bytes(2, "big") + d for d in data)
    out = p.core.receive_block(p.server, encode_block(content, SMP_BLOCK_SIZE))  # v10: not encrypted
    assert len(out) == len(data) and all(o.conn_id == 1 for o in out)


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=60))
def test_random_pool_gives_each_byte_once_in_the_lengths_asked(sizes: list[int]) -> None:
    """The session's corrIds come from a pool of os.urandom: every draw has its length, and no stretch of
    the pool is handed out twice (a repeated corrId is a repeated authenticator nonce)."""
    pool = RandomPool()
    draws = [pool(n) for n in sizes]
    assert [len(d) for d in draws] == sizes
    ids = [d for d in draws if len(d) >= 16]
    assert len(set(ids)) == len(ids)
    corr_ids = [pool(CORR_ID_LEN) for _ in range(1000)]  # across several refills
    assert len(set(corr_ids)) == 1000
