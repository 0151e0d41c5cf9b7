"""A hostile SMP server for the reliability suite: a real TLS server with its own CA (so it has a real
``smp://<fingerprint>@127.0.0.1:<port>`` address) that does the real SMP handshake with the stand-in's
sans-IO pieces (``sim/smp_core``: hello, client hello check, block encryption) and answers NSUBs like a
strict server, and then attacks: garbage or oversized blocks, batch counts that lie, NMSG floods, END
storms, stalls and slowloris writes. It counts what it did so tests can bound the client's reactions
(reconnects per second: no busy loop)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import ssl
import time
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntf_server.protocol import crypto, smp as S
from ntf_server.protocol.encoding import SMPServer, enc_large
from ntf_server.protocol.framing import SMP_BLOCK_SIZE, SMP_SERVER_VRANGE, VersionRange, encode_transmission
from ntf_server.sim.smp_core import (
    HandshakeRefused,
    Outgoing,
    ServerSession,
    SmpServerCore,
    accept_client_hello,
    server_hello_block,
)
from ntf_server.transport import certs, tls
from ntf_server.transport.blocks import BlockStream, ConnectionClosed

SMP_ALPN: Final = "smp/1"
IO_TIMEOUT_S: Final = 30.0
DRIBBLE_S: Final = 0.05  # slowloris: one byte per this


class Attack(enum.Enum):
    GARBAGE_HELLO = "garbage-hello"  # random bytes instead of the server hello
    SLOW_HELLO = "slow-hello"  # the server hello, one byte at a time
    STALL = "stall"  # handshake, then neither read nor write
    GARBAGE_BLOCKS = "garbage-blocks"  # random 16 KB blocks (not sealed by the block cipher chain)
    OVERSIZED = "oversized"  # a sealed block whose transmission claims more bytes than a block holds
    WRONG_COUNT = "wrong-count"  # a sealed batch whose count byte disagrees with its transmissions
    UNKNOWN_MSG = "unknown-msg"  # well-framed transmissions with unknown or malformed broker messages
    NMSG_FLOOD = "nmsg-flood"  # as many NMSGs as the client takes: real queues, unknown ids, bad metadata
    END_STORM = "end-storm"  # END and DELD for every queue, known or not, over and over
    SLOWLORIS = "slowloris"  # after the handshake, a block one byte at a time


PRE_HANDSHAKE: Final = frozenset({Attack.GARBAGE_HELLO, Attack.SLOW_HELLO})


class HostileSmp:
    def __init__(self, attack: Attack, directory: Path, versions: VersionRange = SMP_SERVER_VRANGE) -> None:
        self.attack = attack
        self.versions = versions
        self.core = SmpServerCore()
        self.connections = 0  # TCP+TLS connections accepted
        self.handshakes = 0
        self.sent = 0  # attack transmissions (or blocks, or bytes for the slow attacks) written
        self.attacking = asyncio.Event()
        self._closing = asyncio.Event()  # ends stalls (cancelling a stream handler makes 3.11's asyncio log)
        self._first_connection_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[BlockStream] = set()
        self._server: asyncio.Server | None = None
        algorithm = certs.SignAlgorithm.ED25519
        ca_key, ca = certs.generate_ca(algorithm)
        self._leaf_key, leaf = certs.generate_server_cert(ca_key, ca, "127.0.0.1", algorithm)
        der = serialization.Encoding.DER
        self._chain = (leaf.public_bytes(der), ca.public_bytes(der))
        self.key_hash = certs.fingerprint(self._chain[1])
        directory.mkdir(parents=True, exist_ok=True)
        key_file, cert_file, ca_file = directory / "server.key", directory / "server.crt", directory / "ca.crt"
        certs.write_private_file(key_file, self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        certs.write_public_file(cert_file, leaf.public_bytes(serialization.Encoding.PEM))
        certs.write_public_file(ca_file, ca.public_bytes(serialization.Encoding.PEM))
        self._ctx = tls.server_context(cert_file, key_file, ca_file)
        self._ctx.set_alpn_protocols([SMP_ALPN])

    def __repr__(self) -> str:
        return f"<HostileSmp {self.attack.value} {self.connections} connections, {self.sent} sent>"

    @property
    def address(self) -> SMPServer:
        assert self._server is not None
        return SMPServer(("127.0.0.1",), str(self._server.sockets[0].getsockname()[1]), self.key_hash)

    def create_queue(self, notifier_key: crypto.PublicAuthKey) -> bytes:
        return self.core.create_queue(notifier_key, os.urandom(32))

    def connections_per_s(self) -> float:
        """Connections since the first one, per second (a client in a busy reconnect loop shows here)."""
        if self._first_connection_at is None:
            return 0.0
        return self.connections / max(time.monotonic() - self._first_connection_at, 1.0)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._ctx)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self._streams):
            s.abort()
        self._closing.set()  # a stalling connection waits for nothing the abort would end
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=IO_TIMEOUT_S)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ one connection

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        if self._first_connection_at is None:
            self._first_connection_at = time.monotonic()
        stream = BlockStream(reader, writer, SMP_BLOCK_SIZE, read_timeout_s=IO_TIMEOUT_S,
                             write_timeout_s=IO_TIMEOUT_S)
        self._streams.add(stream)
        try:
            await self._connection(stream, writer)
        except* (ConnectionClosed, TimeoutError, HandshakeRefused, ssl.SSLError, OSError):
            pass  # the client gave up on us: what the attack is for
        finally:
            self._streams.discard(stream)
            await stream.close()
            self._tasks.discard(task)

    async def _connection(self, stream: BlockStream, writer: asyncio.StreamWriter) -> None:
        ssl_obj = stream.ssl_object
        session_id = tls.tls_unique(ssl_obj)
        dh_key = X25519PrivateKey.generate()
        hello = server_hello_block(self.versions, session_id, self._chain, self._leaf_key, dh_key)
        if self.attack in PRE_HANDSHAKE:
            self.attacking.set()
            await self._pre_handshake(stream, writer, hello)
            return
        await stream.write_block(hello)
        session = accept_client_hello(await stream.read_block(), self.handshakes + 1, versions=self.versions,
                                      key_hash=self.key_hash, session_id=session_id, dh_key=dh_key)
        self.handshakes += 1
        conn = _Conn(session, stream, writer)
        if self.attack is Attack.STALL:
            self.attacking.set()
            await self._closing.wait()  # until then only the client's liveness checks end this
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read(conn))
            tg.create_task(self._attack(conn))

    async def _pre_handshake(self, stream: BlockStream, writer: asyncio.StreamWriter, hello: bytes) -> None:
        if self.attack is Attack.GARBAGE_HELLO:
            await stream.write_block(os.urandom(SMP_BLOCK_SIZE))
            self.sent += 1
            await stream.read_block()  # until the client hangs up
            return
        for i in range(len(hello)):
            writer.write(hello[i : i + 1])
            await writer.drain()
            self.sent += 1
            await asyncio.sleep(DRIBBLE_S)

    async def _read(self, conn: _Conn) -> None:
        """Answer the client like a strict server (NSUB → OK/SOK, PING → PONG); the attack starts once
        something was subscribed."""
        while True:
            answers = self.core.receive_block(conn.session, await conn.stream.read_block())
            await conn.send(answers)
            if any(isinstance(a.msg, S.SOk) for a in answers):
                conn.subscribed.set()

    async def _attack(self, conn: _Conn) -> None:
        await conn.subscribed.wait()
        self.attacking.set()
        while True:
            await self._one_round(conn)
            await asyncio.sleep(0)

    async def _one_round(self, conn: _Conn) -> None:
        session, v = conn.session, conn.session.params.version
        known = [q.notifier_id for q in self.core.queues.values() if q.subscriber == session.conn_id]
        match self.attack:
            case Attack.GARBAGE_BLOCKS:
                await conn.raw(os.urandom(SMP_BLOCK_SIZE))
            case Attack.OVERSIZED:
                await conn.sealed(b"\x01" + (0xFFFF).to_bytes(2, "big") + os.urandom(200))
                await conn.raw(os.urandom(SMP_BLOCK_SIZE + 1000))  # and a stream that no longer lines up
            case Attack.WRONG_COUNT:
                t = encode_transmission(session.params, b"", known[0], S.encode_broker_msg(S.End(), v))
                await conn.sealed(bytes((7,)) + enc_large(t))
            case Attack.UNKNOWN_MSG:
                ts = [encode_transmission(session.params, os.urandom(24), os.urandom(24), body) for body in
                      (b"NMSG", b"NMSG " + os.urandom(10), b"WHAT", b"ERR NOPE", b"OK extra", os.urandom(40))]
                await conn.sealed(bytes((len(ts),)) + b"".join(enc_large(t) for t in ts))
            case Attack.NMSG_FLOOD:  # real notifications, unknown queues, metadata that does not decrypt
                meta = S.NMsgMeta(os.urandom(24), int(time.time()))
                items = [i for nid in known for i in self.core.notify(nid, meta)]
                items += [Outgoing(session.conn_id, b"", os.urandom(24), S.NMsg(os.urandom(24), os.urandom(144)))]
                items += [Outgoing(session.conn_id, b"", nid, S.NMsg(os.urandom(24), os.urandom(7))) for nid in known]
                await conn.send(items * 20)
            case Attack.END_STORM:
                ids = [*known, os.urandom(24), os.urandom(24)]
                await conn.send([Outgoing(session.conn_id, b"", nid, m) for nid in ids for m in (S.End(), S.Deld())])
            case Attack.SLOWLORIS:
                block = session.seal(b"\x01" + enc_large(encode_transmission(
                    session.params, b"", known[0], S.encode_broker_msg(S.End(), v))))
                for i in range(len(block)):
                    conn.writer.write(block[i : i + 1])
                    await conn.writer.drain()
                    self.sent += 1
                    await asyncio.sleep(DRIBBLE_S)
            case _:
                raise AssertionError(f"not a post-handshake attack: {self.attack}")
        self.sent += 1


class _Conn:
    def __init__(self, session: ServerSession, stream: BlockStream, writer: asyncio.StreamWriter) -> None:
        self.session, self.stream, self.writer = session, stream, writer
        self.subscribed = asyncio.Event()
        self._lock = asyncio.Lock()  # sealed blocks must leave in the order the chain made them

    async def send(self, items: list[Outgoing]) -> None:
        async with self._lock:
            for block in self.session.encode(items):
                await self.stream.write_block(block)

    async def sealed(self, content: bytes) -> None:
        async with self._lock:
            await self.stream.write_block(self.session.seal(content))

    async def raw(self, data: bytes) -> None:
        async with self._lock:
            self.writer.write(data)
            with contextlib.suppress(ConnectionResetError):
                await self.writer.drain()
