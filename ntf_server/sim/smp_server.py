"""A local SMP server stand-in speaking the real protocol over TLS (tests, benchmarks, ``ntf-server demo``).

Theory of operation: one asyncio TLS server (ALPN ``smp/1``; its own Ed25519 or Ed448 CA + online
certificate, so it has a real ``smp://<fingerprint>@127.0.0.1:<port>`` address). Per connection: the
handshake (§1.8: versions from ``versions``, 6..6 when no ALPN was negotiated; certificate chain and signed
session key from v7; block encryption from v11), then a reader task feeding client blocks to
``SmpServerCore`` and a writer task draining the connection's outbox, packing everything waiting into as
few blocks as fit (batched transmissions, §1.5). Queues are created and fed through the Python API
(:meth:`SmpServerStandIn.create_queue`, :meth:`notify`, :meth:`delete_queue`); the strict protocol rules
live in ``smp_core``.

Faults for tests: :meth:`drop_connections`, :meth:`stall` (stop reading and writing, keep the sockets),
``refuse_handshakes`` (close right after TLS), :meth:`send_garbage` (one block of random bytes),
``answer_delay_s`` (every client block is processed — NSUBs subscribed and answered, PINGs answered — this
long after it arrived, in order: a busy SMP server answering late).

Standalone: ``python -m ntf_server.sim.smp_server [--host 127.0.0.1] [--port 0]`` prints its address.

Why one module of about 400 lines: a whole stand-in server with its fault injection for tests; the protocol rules
it enforces are apart, in smp_core.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.encoding import SMPServer, pad
from ntf_server.protocol.error_types import BlockedErr
from ntf_server.protocol.framing import (
    SMP_BLOCK_SIZE,
    SMP_LEGACY_SERVER_VRANGE,
    SMP_SERVER_VRANGE,
    VersionRange,
)
from ntf_server.protocol.smp_service import service_response
from ntf_server.sim import smp_load
from ntf_server.sim.smp_core import (
    HandshakeRefused,
    Outgoing,
    ServerSession,
    ServiceRefusedAtHandshake,
    SmpServerCore,
    accept_client_hello,
    server_hello_block,
)
from ntf_server.sim.smp_core_services import BAD_AUTH, ServiceRegistry
from ntf_server.transport import certs, tls
from ntf_server.transport.blocks import BlockStream, ConnectionClosed

log = logging.getLogger(__name__)

SMP_ALPN: Final = "smp/1"
HANDSHAKE_TIMEOUT_S: Final = 10.0
BLOCK_TIMEOUT_S: Final = 30.0
OUTBOX_SIZE: Final = 4096  # transmissions; a stalled client slows the stand-in, it never drops anything


@dataclass(frozen=True, slots=True)
class QueueCredentials:
    """What a test's "recipient" knows about a queue it created."""

    notifier_id: bytes
    rcv_ntf_dh_secret: bytes  # shared by the SMP server and the recipient: decrypts NMsgMeta


class _Conn:
    def __init__(self, session: ServerSession, stream: BlockStream) -> None:
        self.session = session
        self.stream = stream
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue(OUTBOX_SIZE)
        self.inbox: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()  # (process at, block), in order


class SmpServerStandIn:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        algorithm: certs.SignAlgorithm = certs.SignAlgorithm.ED25519,
        versions: VersionRange = SMP_SERVER_VRANGE,
    ) -> None:
        self.host = host
        self._port = port
        self.versions = versions
        self.core = SmpServerCore()
        self.refuse_handshakes = False
        self.answer_delay_s = 0.0
        self._client_certs = False  # trust_service_certs() was called: TLS client chains are checked
        self.started = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[BlockStream] = set()
        self._conn_change = asyncio.Condition()
        self._server: asyncio.Server | None = None
        ca_key, ca = certs.generate_ca(algorithm)
        self._leaf_key, leaf = certs.generate_server_cert(ca_key, ca, host, algorithm)
        der = serialization.Encoding.DER
        self._chain = (leaf.public_bytes(der), ca.public_bytes(der))
        self.key_hash = certs.fingerprint(self._chain[1])
        self._context = _server_context(self._leaf_key, leaf.public_bytes(serialization.Encoding.PEM),
                                        ca.public_bytes(serialization.Encoding.PEM))

    def __repr__(self) -> str:
        return f"<SmpServerStandIn {self.host}:{self.port} {len(self._conns)} connections {self.core!r}>"

    @property
    def port(self) -> int:
        """The port listened on (or last listened on; 0 before the first start with port 0)."""
        return self._port

    @property
    def address(self) -> SMPServer:
        return SMPServer((self.host,), str(self.port), self.key_hash)

    @property
    def connections(self) -> int:
        """Connections past the handshake."""
        return len(self._conns)

    async def wait_connections(self, n: int, timeout_s: float = 10.0) -> None:
        """Until ``n`` connections are past the handshake (a client's hello may still be in flight)."""
        async with asyncio.timeout(timeout_s), self._conn_change:
            await self._conn_change.wait_for(lambda: len(self._conns) >= n)

    # ------------------------------------------------------------ lifecycle

    async def start(self, port: int | None = None) -> None:
        """Listen (again, after :meth:`close`: same identity and queues, on ``port`` if given — 0 for any
        free one — else where it listened before), as an SMP server that restarts or moves would."""
        if port is not None:
            self._port = port
        self._server = await asyncio.start_server(self._accept, self.host, self._port, ssl=self._context)
        self._port = int(self._server.sockets[0].getsockname()[1])
        self.started.set()

    async def close(self) -> None:
        """Stop listening and abort every connection; their handlers then end on their own (cancelling a
        stream handler task makes Python 3.11's asyncio log a spurious error)."""
        if self._server is not None:
            self._server.close()
        self._running.set()
        for stream in list(self._streams):
            stream.abort()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=HANDSHAKE_TIMEOUT_S)
            for t in late:
                t.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self.started.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ queue API

    def create_queue(
        self, notifier_key: crypto.PublicAuthKey, *, rcv_ntf_dh_public: X25519PublicKey | None = None,
        notifier_id: bytes | None = None,
    ) -> tuple[QueueCredentials, X25519PublicKey]:
        """A queue with notifier credentials (as after ``NKEY``). The server makes its own notification DH
        key and agrees a secret with the recipient's key (a fresh one when None); returns the credentials
        and the server's DH public key (what the recipient would get in ``NID``)."""
        server_dh = crypto.generate_x25519()
        recipient = rcv_ntf_dh_public or crypto.generate_x25519().public_key()
        secret = crypto.dh(recipient, server_dh)
        nid = self.core.create_queue(notifier_key, secret, notifier_id)
        return QueueCredentials(nid, secret), server_dh.public_key()

    def notify(self, notifier_id: bytes, msg_id: bytes, msg_ts: int) -> None:
        self._deliver(self.core.notify(notifier_id, S.NMsgMeta(msg_id, msg_ts)))

    @property
    def services(self) -> ServiceRegistry:
        """Service knobs: ``refuse``, ``count_offset`` (see ``smp_core_services``)."""
        return self.core.services

    def trust_service_certs(self, *chains: Sequence[bytes]) -> None:
        """Ask TLS clients for a certificate and accept these (self-signed) service certificates, so that a
        service hello's chain is checked against the TLS one (Python's ssl cannot ask for a client
        certificate without a trust store; a real SMP server takes any and checks it in the handshake)."""
        for chain in chains:
            self._context.load_verify_locations(cadata=chain[-1])
        self._context.verify_mode = ssl.CERT_OPTIONAL
        self._client_certs = True

    def drop_service_ties(self) -> None:
        self.core.drop_service_ties()

    def tied_queues(self, service_id: bytes) -> list[bytes]:
        return [q.notifier_id for q in self.core.queues.values() if q.service_id == service_id]

    def block_queue(self, notifier_id: bytes, reason: str = "spam") -> None:
        """As an SMP operator blocking a queue: later NSUBs for it answer ``ERR BLOCKED reason=…``."""
        self.core.queues[notifier_id].blocked = BlockedErr(reason)

    def delete_queue(self, notifier_id: bytes) -> None:
        self._deliver(self.core.delete_queue(notifier_id))

    def create_seeded_queue(self, q: smp_load.SeededServerQueue) -> None:
        """A queue whose credentials another process can derive (``smp_load.seeded_queue``)."""
        self.core.create_queue(q.notifier_key, q.rcv_ntf_dh_secret, q.notifier_id)

    def subscribed_queues(self) -> list[bytes]:
        return [q.notifier_id for q in self.core.queues.values() if q.subscriber is not None]

    def pending_notifications(self, notifier_id: bytes) -> int:
        return len(self.core.queues[notifier_id].pending)

    def subscriber_of(self, notifier_id: bytes) -> int | None:
        return self.core.queues[notifier_id].subscriber

    # ------------------------------------------------------------ faults

    def drop_connections(self) -> None:
        for c in list(self._conns.values()):
            c.stream.abort()

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) reading and answering on every connection; the sockets stay open."""
        if stalled:
            self._running.clear()
        else:
            self._running.set()

    async def send_garbage(self) -> None:
        for c in list(self._conns.values()):
            with contextlib.suppress(ConnectionClosed):
                await c.stream.write_block(os.urandom(SMP_BLOCK_SIZE))

    # ------------------------------------------------------------ connections

    def _deliver(self, items: list[Outgoing]) -> None:
        for item in items:
            conn = self._conns.get(item.conn_id)
            if conn is not None:
                conn.outbox.put_nowait(item)  # bounded: a QueueFull here is a test flooding a dead client

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        stream = BlockStream(reader, writer, SMP_BLOCK_SIZE, read_timeout_s=BLOCK_TIMEOUT_S,
                             write_timeout_s=BLOCK_TIMEOUT_S)
        conn = None
        self._streams.add(stream)
        try:
            conn = await self._handshake(stream)
            if conn is not None:
                await self._serve(conn)
        except (ConnectionClosed, TimeoutError, HandshakeRefused, ssl.SSLError, OSError) as e:
            log.debug("SMP stand-in connection ended: %s", e)
        finally:
            if conn is not None:
                self._conns.pop(conn.session.conn_id, None)
                self.core.disconnected(conn.session.conn_id)
            await stream.close()
            self._streams.discard(stream)
            self._tasks.discard(task)

    async def _handshake(self, stream: BlockStream) -> _Conn | None:
        await self._running.wait()
        if self.refuse_handshakes:
            return None
        ssl_obj = stream.ssl_object
        session_id = tls.tls_unique(ssl_obj)
        versions = self.versions if tls.negotiated_alpn(ssl_obj) == SMP_ALPN else SMP_LEGACY_SERVER_VRANGE
        dh_key = X25519PrivateKey.generate()
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await stream.write_block(server_hello_block(versions, session_id, self._chain, self._leaf_key, dh_key))
            block = await stream.read_block()
        self._next_id += 1
        client_chain = None
        if self._client_certs:  # the server side sees the verified leaf (Python's ssl: not the chain)
            leaf = ssl_obj.getpeercert(binary_form=True)
            client_chain = [leaf] if leaf else []
        try:
            session = accept_client_hello(block, self._next_id, versions=versions, key_hash=self.key_hash,
                                          session_id=session_id, dh_key=dh_key, tls_client_chain=client_chain)
        except ServiceRefusedAtHandshake:
            await stream.write_block(pad(service_response(None, BAD_AUTH), SMP_BLOCK_SIZE))
            raise
        if session.service_request is not None:  # the third handshake block: our service id, or refused
            await stream.write_block(self.core.accept_service(session))
            if session.service is None:
                return None
        conn = _Conn(session, stream)
        self._conns[session.conn_id] = conn
        async with self._conn_change:
            self._conn_change.notify_all()
        return conn

    async def _serve(self, conn: _Conn) -> None:
        """Reader, processor and writer; the first to end (EOF, dropped, failed write) ends the others."""
        tasks = [asyncio.create_task(self._read(conn)), asyncio.create_task(self._process(conn)),
                 asyncio.create_task(self._write(conn))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and (e := t.exception()) is not None:
                    raise e
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            block = await conn.stream.read_block()
            await self._running.wait()
            conn.inbox.put_nowait((loop.time() + self.answer_delay_s, block))

    async def _process(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, block = await conn.inbox.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self._running.wait()
            self._deliver(self.core.receive_block(conn.session, block))

    async def _write(self, conn: _Conn) -> None:
        while True:
            items = [await conn.outbox.get()]
            while not conn.outbox.empty():
                items.append(conn.outbox.get_nowait())
            await self._running.wait()
            for block in conn.session.encode(items):
                await conn.stream.write_block(block)


def _server_context(leaf_key: certs.SigningKey, leaf_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """The NTF listener's TLS profile with ALPN ``smp/1``; the key files exist only while loading."""
    with tempfile.TemporaryDirectory(prefix="smp-sim-") as tmp:
        d = Path(tmp)
        certs.write_private_file(d / certs.SERVER_KEY_FILE, leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        certs.write_public_file(d / certs.SERVER_CERT_FILE, leaf_pem)
        certs.write_public_file(d / certs.CA_CERT_FILE, ca_pem)
        ctx = tls.server_context(d / certs.SERVER_CERT_FILE, d / certs.SERVER_KEY_FILE, d / certs.CA_CERT_FILE)
    ctx.set_alpn_protocols([SMP_ALPN])
    return ctx


# ---------------------------------------------------------------- standalone


async def _main(args: argparse.Namespace) -> None:
    server = SmpServerStandIn(host=args.host, port=args.port, algorithm=certs.SignAlgorithm(args.algorithm),
                              versions=VersionRange(args.min_version, args.max_version))
    smp_load.create_seeded_queues(server, args.seed.encode(), args.queues, smp_load.KeyType(args.key_type))
    async with server:
        print(f"started {server.address.to_uri()}", flush=True)
        if args.nmsg_per_s > 0:
            await smp_load.notify_forever(server, args.nmsg_per_s)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ntf_server.sim.smp_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one, printed at start)")
    p.add_argument("--algorithm", choices=[a.value for a in certs.SignAlgorithm], default="ed25519",
                   help="certificate key type")
    p.add_argument("--min-version", type=int, default=SMP_SERVER_VRANGE.min)
    p.add_argument("--max-version", type=int, default=SMP_SERVER_VRANGE.max)
    p.add_argument("--queues", type=int, default=0, help="create queues 0..N-1 derived from --seed")
    p.add_argument("--seed", default="smp-sim", help="seed of the derived queues (see sim/smp_load.py)")
    p.add_argument("--key-type", choices=[k.value for k in smp_load.KeyType], default="ed25519",
                   help="notifier key type of the derived queues")
    p.add_argument("--nmsg-per-s", type=float, default=0.0, help="notifications per second to subscribed queues")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
