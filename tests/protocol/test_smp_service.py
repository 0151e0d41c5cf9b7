"""SMP notifier services (v16+; IdsHash from v19), sans-IO: our client session against the stand-in core,
connected in memory, as simplexmq master's Transport.hs / Server.hs do them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from test_smp_client import ID25519, SID, hello, shake

from ntf_server.protocol import crypto, smp as S, smp_events as E
from ntf_server.protocol.error_types import HandshakeError, SimpleError
from ntf_server.protocol.framing import VersionRange
from ntf_server.protocol.smp_service import (
    ServiceCredentials,
    ServiceRefused,
    ServiceSession,
    identity_hash,
    read_service_response,
)
from ntf_server.protocol.smp_session import NotifierQueue, SmpClientSession
from ntf_server.sim.smp_core import (
    Outgoing,
    ServerSession,
    ServiceRefusedAtHandshake,
    SmpServerCore,
    accept_client_hello,
)
from ntf_server.transport import certs

SERVICE = SimpleError("SERVICE")


def service_credentials() -> ServiceCredentials:
    key, cert = certs.generate_service_cert()
    return ServiceCredentials((cert.public_bytes(Encoding.DER),), key)


CREDS = service_credentials()


@dataclass
class Conn:
    client: SmpClientSession
    server: ServerSession


def connect(core: SmpServerCore, conn_id: int, version: int = 20, creds: ServiceCredentials | None = CREDS,
            client_service: bool = True) -> Conn:
    """A connection with the service handshake (when ``creds``); ``client_service=False`` makes our side
    forget it was a service session (to send what a correct client never would)."""
    server_dh = crypto.generate_x25519()
    hs = shake(hello(versions=VersionRange(6, version), dh=server_dh), service=creds)
    server = accept_client_hello(hs.client_hello, conn_id, versions=VersionRange(6, version),
                                 key_hash=ID25519.key_hash, session_id=SID, dh_key=server_dh)
    service = None
    if server.service_request is not None:
        service_id = read_service_response(core.accept_service(server))
        assert hs.service_key is not None and creds is not None
        service = ServiceSession(service_id, creds.cert_hash, hs.service_key)
    return Conn(SmpClientSession(hs, now=0.0, service=service if client_service else None), server)


def exchange(core: SmpServerCore, c: Conn, blocks: list[bytes]) -> list[Outgoing]:
    return [o for b in blocks for o in core.receive_block(c.server, b)]


def deliver(c: Conn, out: list[Outgoing]) -> list[E.SmpEvent]:
    mine = [o for o in out if o.conn_id == c.server.conn_id]
    return [e for b in c.server.encode(mine) for e in c.client.receive_block(b, now=1.0)]


def new_queue(core: SmpServerCore) -> NotifierQueue:
    key = crypto.generate_ed25519()
    return NotifierQueue(core.create_queue(crypto.public_of(key), bytes(32)), key)


def test_service_handshake_gives_the_same_id_for_the_same_certificate() -> None:
    core = SmpServerCore()
    a, b = connect(core, 1), connect(core, 2)
    assert a.server.service is not None and b.server.service is not None
    assert a.server.service.service_id == b.server.service.service_id
    assert a.server.service.cert_hash == CREDS.cert_hash == identity_hash(CREDS.chain)
    other = connect(core, 3, creds=service_credentials())
    assert other.server.service is not None and other.server.service.service_id != a.server.service.service_id


def test_below_v16_no_service_is_offered() -> None:
    core = SmpServerCore()
    c = connect(core, 1, version=15)
    assert c.server.service_request is None and c.client.service is None


def test_refused_service_and_forged_service_key() -> None:
    core = SmpServerCore()
    core.services.refuse = True
    server_dh = crypto.generate_x25519()
    hs = shake(hello(versions=VersionRange(6, 20), dh=server_dh), service=CREDS)
    server = accept_client_hello(hs.client_hello, 1, versions=VersionRange(6, 20), key_hash=ID25519.key_hash,
                                 session_id=SID, dh_key=server_dh)
    with pytest.raises(ServiceRefused) as e:
        read_service_response(core.accept_service(server))
    assert e.value.error.handshake is HandshakeError.BAD_SERVICE
    forged = ServiceCredentials(CREDS.chain, crypto.generate_ed25519())  # a key the certificate does not hold
    hs = shake(hello(versions=VersionRange(6, 20), dh=server_dh), service=forged)
    with pytest.raises(ServiceRefusedAtHandshake):
        accept_client_hello(hs.client_hello, 2, versions=VersionRange(6, 20), key_hash=ID25519.key_hash,
                            session_id=SID, dh_key=server_dh)


@pytest.mark.parametrize("version", [16, 18, 19, 20])
def test_double_signed_nsub_ties_the_queue_and_nsubs_takes_them_all(version: int) -> None:
    core = SmpServerCore()
    first = connect(core, 1, version)
    queues = [new_queue(core) for _ in range(3)]
    events = deliver(first, exchange(core, first, first.client.subscribe(queues)))
    assert first.server.service is not None
    sid = first.server.service.service_id
    assert events == [E.Subscribed(q.notifier_id, sid) for q in queues]
    assert all(core.queues[q.notifier_id].service_id == sid for q in queues)
    # A reconnect: one NSUBS for all of them; the older session is told ENDS.
    second = connect(core, 2, version)
    expected_hash = S.queue_ids_hash(q.notifier_id for q in queues)
    out = exchange(core, second, second.client.subscribe_service(3, expected_hash))
    hash_on_wire = expected_hash if version >= 19 else S.EMPTY_IDS_HASH
    assert deliver(second, out) == [E.ServiceSubscribed(3, hash_on_wire)]
    assert deliver(first, out) == [E.ServiceEnded(3, hash_on_wire)]
    assert all(core.queues[q.notifier_id].subscriber == 2 for q in queues)
    # Notifications now go to the new session.
    assert [type(e) for e in deliver(second, core.notify(queues[0].notifier_id, S.NMsgMeta(b"m", 1)))] == [E.Message]


def test_drift_dropped_ties_and_a_plain_nsub_untying() -> None:
    core = SmpServerCore()
    c = connect(core, 1)
    queues = [new_queue(core) for _ in range(2)]
    deliver(c, exchange(core, c, c.client.subscribe(queues)))
    core.services.count_offset = -1  # the server reports another count: the client sees the drift
    [ev] = deliver(c, exchange(core, c, c.client.subscribe_service(2, S.queue_ids_hash(q.notifier_id for q in queues))))
    assert isinstance(ev, E.ServiceSubscribed) and ev.count == 1
    core.services.count_offset = 0
    core.drop_service_ties()
    [ev] = deliver(c, exchange(core, c, c.client.subscribe_service(2, S.EMPTY_IDS_HASH)))
    assert ev == E.ServiceSubscribed(0, S.EMPTY_IDS_HASH)
    plain = connect(core, 2, creds=None)
    [ev] = deliver(plain, exchange(core, plain, plain.client.subscribe(queues[:1])))
    assert ev == E.Subscribed(queues[0].notifier_id, None) and core.queues[queues[0].notifier_id].service_id is None


def test_service_signatures_are_checked() -> None:
    core = SmpServerCore()
    q = new_queue(core)
    lying = connect(core, 1, client_service=False)  # a service session whose NSUB is not double-signed
    [ev] = deliver(lying, exchange(core, lying, lying.client.subscribe([q])))
    assert ev == E.SubscriptionFailed(q.notifier_id, E.FailureKind.SERVICE, SERVICE)
    plain = connect(core, 2, creds=None)
    with pytest.raises(ValueError, match="service session"):
        plain.client.subscribe_service(0, S.EMPTY_IDS_HASH)
    # NSUBS from a session whose key is not the one the handshake signed: SERVICE.
    good = connect(core, 3)
    assert good.client.service is not None
    good.client.service = ServiceSession(good.client.service.service_id, CREDS.cert_hash, crypto.generate_ed25519())
    [ev] = deliver(good, exchange(core, good, good.client.subscribe_service(0, S.EMPTY_IDS_HASH)))
    assert ev == E.ServiceSubscriptionFailed(SERVICE)


def test_nsubs_timeout_falls_back() -> None:
    core = SmpServerCore()
    c = connect(core, 1)
    c.client.subscribe_service(1, S.EMPTY_IDS_HASH)
    c.client.block_written(now=0.0)
    assert c.client.expire(now=30.0, timeout_s=30.0) == [E.ServiceSubscriptionFailed(None, "timed out")]


def test_end_and_deld_of_a_queue_subscribed_by_nsubs() -> None:
    core = SmpServerCore()
    first = connect(core, 1)
    q, other = new_queue(core), new_queue(core)
    deliver(first, exchange(core, first, first.client.subscribe([q, other])))
    second = connect(core, 2)  # NSUBS: the queues are subscribed here without one NSUB each
    deliver(second, exchange(core, second, second.client.subscribe_service(2, S.EMPTY_IDS_HASH)))
    plain = connect(core, 3, creds=None)  # another subscriber takes one: END; the other is deleted: DELD
    assert deliver(second, exchange(core, plain, plain.client.subscribe([q]))) == [E.Ended(q.notifier_id)]
    assert deliver(second, core.delete_queue(other.notifier_id)) == [E.Deleted(other.notifier_id)]
