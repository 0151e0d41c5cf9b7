"""The SMP stand-in's notifier services (SMP v16+), as simplexmq master's ``Server.hs`` does them, sans-IO.

Theory of operation. A client hello with a service part that verifies gets a service id — the same id for
the same certificate hash, as ``getCreateService`` — in a third handshake block. In a service session:

* ``verifyServiceSig``: a command that uses service auth (NSUB) must carry the session key's signature over
  ``authorized`` in the service slot; any other command, or any command outside a service session, must
  not carry one. Otherwise ``ERR SERVICE``.
* NSUB ties the queue to the service (``SOK serviceId``); a plain NSUB unties it (``SOK`` with nothing).
* ``NSUBS`` (entity = service id, signed by the session key alone) subscribes every queue tied to the
  service on this connection, answers ``SOKS count idsHash`` (what the server holds, whatever the client
  expected) and sends ``ENDS`` with the count it took to the service's previous session.

Knobs for tests: ``refuse`` (answer ``HANDSHAKE BAD_SERVICE``), ``count_offset`` (report a different
count: drift), and the core's ``drop_service_ties``; answering late is the server's ``answer_delay_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.encoding import pad
from ntf_server.protocol.error_types import HandshakeError, SimpleError, TransportError, TransportErrorKind
from ntf_server.protocol.framing import SMP_BLOCK_SIZE, RawTransmission
from ntf_server.protocol.smp_service import SERVICE_ID_LEN, PeerService, service_response

if TYPE_CHECKING:
    from ntf_server.sim.smp_core import Outgoing, ServerSession, SimQueue

BAD_SERVICE: Final = TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.BAD_SERVICE)
BAD_AUTH: Final = TransportError(TransportErrorKind.HANDSHAKE, HandshakeError.BAD_AUTH)
SERVICE_ERR: Final = SimpleError("SERVICE")


def service_sig_ok(session: ServerSession, t: RawTransmission, uses_service_auth: bool) -> bool:
    svc = session.service
    if not uses_service_auth or svc is None:
        return t.service_sig is None
    return t.service_sig is not None and svc.key.verify(t.service_sig, t.authorized)


class ServiceRegistry:
    def __init__(self, random: Callable[[int], bytes]) -> None:
        self._random = random
        self._ids: dict[bytes, bytes] = {}  # certificate hash → service id
        self._sessions: dict[bytes, int] = {}  # service id → the connection holding its NSUBS
        self.refuse = False
        self.count_offset = 0

    def __repr__(self) -> str:
        return f"<ServiceRegistry {len(self._ids)} services, {len(self._sessions)} subscribed>"

    def accept(self, session: ServerSession) -> bytes:
        assert session.service_request is not None
        cert_hash, key = session.service_request
        if self.refuse:
            return pad(service_response(None, BAD_SERVICE), SMP_BLOCK_SIZE)
        service_id = self._ids.setdefault(cert_hash, self._random(SERVICE_ID_LEN))
        session.service = PeerService(service_id, cert_hash, crypto.SodiumEd25519PublicKey.of(key))
        return pad(service_response(service_id), SMP_BLOCK_SIZE)

    def register(self, cert_hash: bytes, service_id: bytes) -> None:
        """A service this SMP server already knows (e.g. a Haskell ntf-server's, before an import)."""
        self._ids[cert_hash] = service_id

    def tied(self, service_id: bytes, conn_id: int) -> None:
        """An NSUB of this session tied a queue: the session now holds the service's subscriptions."""
        self._sessions[service_id] = conn_id

    def disconnected(self, conn_id: int) -> None:
        for sid in [s for s, c in self._sessions.items() if c == conn_id]:
            del self._sessions[sid]

    def nsubs(self, queues: Mapping[bytes, SimQueue], session: ServerSession, t: RawTransmission) -> list[Outgoing]:
        from ntf_server.sim.smp_core import Outgoing  # the core imports this module

        conn, svc = session.conn_id, session.service
        if (svc is None or t.entity_id != svc.service_id
                or not svc.key.verify(t.auth, t.authorized)):
            return [Outgoing(conn, t.corr_id, t.entity_id, S.SmpErr(SERVICE_ERR))]
        tied = [q for q in queues.values() if q.service_id == svc.service_id]
        ids_hash = S.queue_ids_hash(q.notifier_id for q in tied)
        out = []
        previous = self._sessions.get(svc.service_id)
        if previous is not None and previous != conn:
            taken = [q.notifier_id for q in tied if q.subscriber == previous]
            out.append(Outgoing(previous, b"", svc.service_id, S.Ends(len(taken), S.queue_ids_hash(taken))))
        for q in tied:
            if q.subscriber is not None and q.subscriber not in (conn, previous):
                out.append(Outgoing(q.subscriber, b"", q.notifier_id, S.End()))
            q.subscriber = conn
        self._sessions[svc.service_id] = conn
        out.append(Outgoing(conn, t.corr_id, svc.service_id, S.SOks(len(tied) + self.count_offset, ids_hash)))
        for q in tied:
            out += [Outgoing(conn, b"", q.notifier_id, m) for m in q.pending]
            q.pending.clear()
        return out
