"""The SMP server stand-in's protocol logic, without I/O: handshake records, queues, NSUB and events.

Theory of operation: ``SmpServerCore`` holds the queues a test created through its API (notifier id →
notifier public key, the recipient's notification DH secret) and which connection currently receives
each queue's notifications. Connections are plain integers here. Every input (a client block, a new
notification, a deleted queue, a closed connection) returns the transmissions to send as
:class:`Outgoing` items addressed to connections; the asyncio layer (``smp_server.py``) encodes them with
each connection's version and writes them. It behaves like a strict Haskell SMP server (§2.4–2.5,
§3.1–3.2):

* NSUB needs auth and an entity; it is verified against the queue's notifier key (Ed25519/Ed448
  signature or X25519 authenticator to this connection's session key, v7+); an unknown queue costs a dummy
  verification and answers ``ERR AUTH``; a service signature in a non-service session is ``ERR SERVICE``;
  other SMP commands are ``ERR CMD PROHIBITED``, unknown ones ``ERR CMD UNKNOWN``. Ed25519 keys are kept as
  libsodium's (``crypto.SodiumEd25519PublicKey``, made at ``create_queue``): the check is most of the CPU an
  NSUB costs here, and libsodium's takes half of OpenSSL's, rejecting all OpenSSL rejects.
* Success answers ``OK`` (< v16) / ``SOK`` (≥ v16); a previous subscriber on another connection gets ``END``;
  notifications kept while nobody was subscribed follow right after the answer (real servers keep them 24 h).
* Services (SMP v16+, ``smp_core_services``): a service hello gets a service id; NSUB in a service session
  must be double-signed and ties the queue (``SOK serviceId``); NSUBS subscribes every tied queue
  (``SOKS count idsHash``, ``ENDS`` to the service's previous session).
* A blocked queue answers NSUB ``ERR BLOCKED`` (downgraded for old versions by the encoder).
* Deleting a queue sends ``DELD`` (``END`` before v10) to its subscriber.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, assert_never

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.certchain import ChainError
from ntf_server.protocol.encoding import CodecError, pad
from ntf_server.protocol.error_types import AUTH, BLOCK, SESSION, BlockedErr, ErrorType, SimpleError
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    SMP_VERSION_AUTH_CMDS,
    SMP_VERSION_ENCRYPTED_BLOCK,
    Batch,
    RawTransmission,
    THParams,
    VersionRange,
    batch_transmissions,
    decode_block,
    encode_block,
    encode_transmission,
    parse_block,
)
from ntf_server.protocol.handshake import CertChainPubKey, ServiceRole, SmpClientHello, SmpServerHello
from ntf_server.protocol.smp_service import PeerService, verify_client_service
from ntf_server.sim.smp_core_services import ServiceRegistry, service_sig_ok

NOTIFIER_ID_LEN: Final = 24
MAX_PENDING_PER_QUEUE: Final = 1000  # a bound, so a test that forgets to subscribe cannot eat memory
SERVICE: Final = SimpleError("SERVICE")


class HandshakeRefused(Exception):
    """The client hello is not acceptable: close the connection without a word (as Haskell does)."""


class ServiceRefusedAtHandshake(HandshakeRefused):
    """The hello's service part does not verify: answer ``'E' HANDSHAKE BAD_AUTH``, then close."""


# ---------------------------------------------------------------- handshake


def server_hello_block(
    versions: VersionRange,
    session_id: bytes,
    chain_der: tuple[bytes, ...],
    leaf_key: crypto.SignPrivateKey,
    dh_key: X25519PrivateKey,
) -> bytes:
    """§1.8 step 1: versions, session id, and from v7 the chain plus our session key signed by the leaf."""
    cert_key = None
    if versions.max >= SMP_VERSION_AUTH_CMDS:
        signed = crypto.signed_exact(crypto.signed_key_tbs(dh_key.public_key()), leaf_key)
        cert_key = CertChainPubKey(chain_der, signed)
    return pad(SmpServerHello(versions, session_id, cert_key).encode(), SMP_BLOCK_SIZE)


class Outgoing(NamedTuple):  # a NamedTuple, not a frozen dataclass: one per NSUB, made in a third of the time
    conn_id: int
    corr_id: bytes
    entity_id: bytes
    msg: S.BrokerMsg


SOK: Final = S.SOk()  # the answer to every plain NSUB: one object, encoded once per batch of answers
_CHECKED_COMMANDS: Final = (S.NSub, S.NSubs, S.SmpPing)


@dataclass(slots=True)
class ServerSession:
    """One accepted connection after the handshake."""

    conn_id: int
    params: THParams
    dh_key: X25519PrivateKey | None  # verifies X25519 authenticators (v7+)
    chains: tuple[crypto.BlockCipherChain, crypto.BlockCipherChain] | None = field(repr=False)
    # The client hello's service part, checked (cert hash, session key), until the core gives it an id.
    service_request: tuple[bytes, Ed25519PublicKey] | None = field(default=None, repr=False)
    service: PeerService | None = None  # a service session (smp_core_services)

    def seal(self, content: bytes) -> bytes:
        if self.chains is None:
            return encode_block(content, SMP_BLOCK_SIZE)
        return self.chains[0].encrypt_block(content, SMP_BLOCK_SIZE)

    def open(self, block: bytes) -> bytes:
        if self.chains is None:
            return decode_block(block, SMP_BLOCK_SIZE)
        return self.chains[1].decrypt_block(block)

    def encode(self, items: Sequence[Outgoing]) -> list[bytes]:
        """Answers and events for this connection as few sealed blocks as they fit (§1.5)."""
        p, v, enc = self.params, self.params.version, S.encode_broker_msg
        sok = enc(SOK, v)
        ts = [encode_transmission(p, i.corr_id, i.entity_id, sok if i.msg is SOK else enc(i.msg, v)) for i in items]
        return [self.seal(b.content) for b in batch_transmissions(self.params, ts) if isinstance(b, Batch)]


def accept_client_hello(
    block: bytes, conn_id: int, *, versions: VersionRange, key_hash: bytes, session_id: bytes,
    dh_key: X25519PrivateKey, tls_client_chain: Sequence[bytes] | None = None,
) -> ServerSession:
    """§1.8 step 3 on the server: our identity, a version we offered; from v11 block encryption. With
    ``tls_client_chain`` (the server asked for client certificates: the TLS leaf, all Python's ssl shows a
    server) a service hello's leaf must be the TLS one (Haskell: ``getPeerCertChain c == cc``)."""
    try:
        hello = SmpClientHello.decode(decode_block(block, SMP_BLOCK_SIZE))
    except CodecError as e:
        raise HandshakeRefused(f"unparseable client hello: {e}") from e
    if not hmac.compare_digest(hello.key_hash, key_hash):
        raise HandshakeRefused("client expects another server identity")
    if hello.version not in versions:
        raise HandshakeRefused(f"client version {hello.version} outside {versions.min}..{versions.max}")
    if hello.proxy_server:
        raise HandshakeRefused("proxy clients are not supported by the stand-in")
    request = None
    if hello.service is not None:
        if hello.service.role is not ServiceRole.NOTIFIER:
            raise HandshakeRefused("the stand-in serves notifier services only")
        if tls_client_chain is not None and list(tls_client_chain) != list(hello.service.cert_key.chain[:1]):
            raise ServiceRefusedAtHandshake("the service certificate is not the TLS client certificate")
        try:
            request = verify_client_service(hello.service)
        except (ChainError, CodecError) as e:
            raise ServiceRefusedAtHandshake(str(e)) from e
    chains = None
    if hello.version >= SMP_VERSION_ENCRYPTED_BLOCK and hello.client_key is not None:
        try:
            secret = crypto.dh(crypto.decode_x25519_public_key(hello.client_key), dh_key)
        except CodecError as e:
            raise HandshakeRefused(f"bad client key: {e}") from e
        chains = crypto.BlockCipherChain.server_pair(session_id, secret)
    own_dh = dh_key if hello.version >= SMP_VERSION_AUTH_CMDS else None
    return ServerSession(conn_id, THParams.smp(hello.version, session_id), own_dh, chains, request)


# ---------------------------------------------------------------- queues and commands


@dataclass(slots=True)
class SimQueue:
    notifier_id: bytes
    notifier_key: crypto.VerifyAuthKey = field(repr=False)  # Ed25519: libsodium's, made once here
    rcv_ntf_dh_secret: bytes = field(repr=False)
    subscriber: int | None = None
    pending: list[S.NMsg] = field(default_factory=list, repr=False)
    blocked: BlockedErr | None = None  # an operator blocked it: NSUB answers ERR BLOCKED
    service_id: bytes | None = None  # tied to this notifier service (NSUB in its session)


class SmpServerCore:
    def __init__(self, random: Callable[[int], bytes] = os.urandom) -> None:
        self.queues: dict[bytes, SimQueue] = {}
        self._random = random
        self.services = ServiceRegistry(random)
        # NSUBs of a queue another open connection held (it got END): the queue was subscribed by two
        # connections at once, what the NTF servers' leases exist to prevent (tests/bench/two_instances.py)
        self.taken_from_live = 0

    def __repr__(self) -> str:
        subscribed = sum(q.subscriber is not None for q in self.queues.values())
        return f"<SmpServerCore {len(self.queues)} queues, {subscribed} subscribed>"

    def create_queue(
        self, notifier_key: crypto.VerifyAuthKey, rcv_ntf_dh_secret: bytes, notifier_id: bytes | None = None
    ) -> bytes:
        nid = notifier_id if notifier_id is not None else self._random(NOTIFIER_ID_LEN)
        if nid in self.queues:
            raise ValueError("notifier id in use")
        self.queues[nid] = SimQueue(nid, crypto.verify_auth_key(notifier_key), rcv_ntf_dh_secret)
        return nid

    def delete_queue(self, notifier_id: bytes) -> list[Outgoing]:
        q = self.queues.pop(notifier_id)
        return [] if q.subscriber is None else [Outgoing(q.subscriber, b"", notifier_id, S.Deld())]

    def notify(self, notifier_id: bytes, meta: S.NMsgMeta) -> list[Outgoing]:
        """A message arrived in the queue: NMSG to its subscriber, or kept until one subscribes."""
        q = self.queues[notifier_id]
        nonce = self._random(crypto.NONCE_LEN)
        msg = S.NMsg(nonce, S.encrypt_nmsg_meta(q.rcv_ntf_dh_secret, nonce, meta))
        if q.subscriber is None:
            if len(q.pending) >= MAX_PENDING_PER_QUEUE:
                del q.pending[0]
            q.pending.append(msg)
            return []
        return [Outgoing(q.subscriber, b"", notifier_id, msg)]

    def disconnected(self, conn_id: int) -> None:
        for q in self.queues.values():
            if q.subscriber == conn_id:
                q.subscriber = None
        self.services.disconnected(conn_id)

    def accept_service(self, session: ServerSession) -> bytes:
        """The third handshake block for a service hello (``'R' serviceId`` or ``'E' …``), padded."""
        return self.services.accept(session)

    def drop_service_ties(self) -> None:
        """As if the SMP server lost its queue-service associations (every queue now untied)."""
        for q in self.queues.values():
            q.service_id = None

    def receive_block(self, session: ServerSession, block: bytes) -> list[Outgoing]:
        """All answers to one client block. A block that does not open is answered ``ERR BLOCK``."""
        try:
            items = parse_block(session.params, session.open(block))
        except CodecError:
            return [Outgoing(session.conn_id, b"", b"", S.SmpErr(BLOCK))]
        out: list[Outgoing] = []
        for item in items:
            if isinstance(item, CodecError):
                out.append(Outgoing(session.conn_id, b"", b"", S.SmpErr(BLOCK)))
            else:
                out += self._transmission(session, item)
        return out

    @staticmethod
    def _err(session: ServerSession, t: RawTransmission, e: ErrorType) -> list[Outgoing]:
        return [Outgoing(session.conn_id, t.corr_id, t.entity_id, S.SmpErr(e))]

    def _transmission(self, session: ServerSession, t: RawTransmission) -> list[Outgoing]:
        params = session.params
        if not params.implied_session_id and t.session_id != params.session_id:
            return [Outgoing(session.conn_id, t.corr_id, b"", S.SmpErr(SESSION))]
        cmd = S.parse_command(t.command, params.version)
        if not isinstance(cmd, _CHECKED_COMMANDS):
            return self._err(session, t, cmd)
        bad = S.check_command_credentials(bool(t.auth), t.entity_id, cmd)
        if bad is not None:
            return self._err(session, t, bad)
        if not service_sig_ok(session, t, S.uses_service_auth(cmd)):  # ``verifyServiceSig``
            return self._err(session, t, SERVICE)
        match cmd:
            case S.SmpPing():
                return [Outgoing(session.conn_id, t.corr_id, b"", S.SmpPong())]
            case S.NSubs():
                return self.services.nsubs(self.queues, session, t)
            case S.NSub():
                return self._nsub(session, t)
            case _:
                assert_never(cmd)

    def _nsub(self, session: ServerSession, t: RawTransmission) -> list[Outgoing]:
        q = self.queues.get(t.entity_id)
        # An unknown queue: its auth is checked against the dummy key of its length, costing what a real one does.
        key = q.notifier_key if q is not None else crypto.VERIFY_DUMMY_KEYS.get(len(t.auth))
        svc = session.service
        # In a service session the queue key covers certHash ‖ authorized (Server.hs ``authorized'``).
        authorized = svc.cert_hash + t.authorized if svc is not None else t.authorized
        ok = crypto.verify_transmission_auth(key, t.auth, authorized, t.corr_id, session.dh_key)
        if q is None or not ok:
            return [Outgoing(session.conn_id, t.corr_id, t.entity_id, S.SmpErr(AUTH))]
        if q.blocked is not None:
            return [Outgoing(session.conn_id, t.corr_id, t.entity_id, S.SmpErr(q.blocked))]
        conn, out = session.conn_id, []
        if q.subscriber is not None and q.subscriber != conn:
            out.append(Outgoing(q.subscriber, b"", q.notifier_id, S.End()))
            self.taken_from_live += 1
        q.subscriber = conn
        q.service_id = svc.service_id if svc is not None else None  # tied, or untied by a plain NSUB
        if svc is not None:
            self.services.tied(svc.service_id, conn)
        out.append(Outgoing(conn, t.corr_id, q.notifier_id, SOK if svc is None else S.SOk(svc.service_id)))
        if q.pending:
            out += [Outgoing(conn, b"", q.notifier_id, m) for m in q.pending]
            q.pending.clear()
        return out
