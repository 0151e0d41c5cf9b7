"""Opening one SMP connection (§1.1, §1.2, §1.8): the edge where socket, TLS and handshake exceptions
become :class:`ConnectFailed` or :class:`HandshakeFailed`.

Order of events, per host of the server in the order given (the pool chooses which hosts, e.g. no
``.onion`` without a proxy): the host **name** is resolved and connected afresh on every attempt (no
address is cached anywhere here: an SMP server that moved to a new IP is reached on the next connect); a
host that cannot be reached is skipped for the next one. Once TCP is up the attempt is final: TLS
without SNI with ALPN ``smp/1``, the TLS chain checked against the pinned CA hash before anything is
read or written, then the server hello checked (``protocol.smp_client.client_handshake``: session id,
versions 7–20, the hello's chain = the TLS chain, the signed session key) and our hello written. Any
failure there closes the socket having sent nothing of SMP.

``open_tcp`` is the hook for proxies: any coroutine ``(host, port) -> connected socket`` works (e.g. a
SOCKS5 connector for ``.onion`` hosts, which is the pool's business).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ntf_server.privatehosts import private_address
from ntf_server.protocol import smp_client
from ntf_server.protocol.certchain import ChainError
from ntf_server.protocol.encoding import CodecError
from ntf_server.protocol.framing import SMP_BLOCK_SIZE, SMP_CLIENT_VRANGE, VersionRange
from ntf_server.protocol.smp_service import (
    ServiceCredentials,
    ServiceRefused as ServiceRefusedByServer,
    ServiceSession,
    read_service_response,
)
from ntf_server.subscriber.link_errors import ConnectFailed, HandshakeFailed, ServiceRefused
from ntf_server.subscriber.liveness import Timeouts
from ntf_server.transport import tls
from ntf_server.transport.blocks import BlockStream, ConnectionClosed

AddrInfo = tuple[int, int, int, str, Any]
Resolver = Callable[[str, int], Awaitable[Sequence[AddrInfo]]]
TcpOpener = Callable[[str, int], Awaitable[socket.socket]]

# TCP keep-alive as the Haskell client (§1.1): idle 30 s, interval 15 s, 4 probes.
KEEPALIVE: Final = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))


async def _system_resolve(host: str, port: int) -> Sequence[AddrInfo]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def open_tcp(host: str, port: int, *, resolve: Resolver = _system_resolve) -> socket.socket:
    """Resolve ``host`` now and connect to its addresses in order; the first that answers wins."""
    loop = asyncio.get_running_loop()
    infos = await resolve(host, port)
    last: OSError = OSError(f"{host} resolves to no address")
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as e:
            sock.close()
            last = e
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last


def public_only(resolve: Resolver = _system_resolve) -> Resolver:
    """A resolver that drops private, loopback and link-local addresses (``subscriber.allow_private_hosts``
    off, see privatehosts.py); a name with no other address fails like one that does not resolve."""

    async def resolve_public(host: str, port: int) -> Sequence[AddrInfo]:
        infos = await resolve(host, port)
        public = [i for i in infos if not private_address(ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]))]
        if infos and not public:
            raise OSError(f"{host} resolves only to private addresses (subscriber.allow_private_hosts is off)")
        return public

    return resolve_public


def _keepalive(sock: socket.socket) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE:
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


@dataclass(frozen=True, slots=True)
class Connected:
    stream: BlockStream
    handshake: smp_client.SmpHandshake
    host: str  # the host name that answered
    service: ServiceSession | None = None  # our service session, when credentials were given (v16+)


async def open_smp(
    hosts: Sequence[str],
    port: int,
    key_hash: bytes,
    *,
    context: ssl.SSLContext,
    timeouts: Timeouts,
    opener: TcpOpener = open_tcp,
    versions: VersionRange = SMP_CLIENT_VRANGE,
    service: ServiceCredentials | None = None,
) -> Connected:
    """Connect to the first reachable host and run the SMP handshake (see the module docstring). With
    ``service`` (its certificate must also be in ``context``, see ``tls.smp_service_context``) the hello
    offers our service and the server's third block names our service id."""
    if not hosts:
        raise ConnectFailed("no host to connect to")
    failures: list[str] = []
    for host in hosts:
        deadline = asyncio.get_running_loop().time() + timeouts.connect_s  # TCP + TLS + handshake, per host
        try:
            async with asyncio.timeout_at(deadline):
                sock = await opener(host, port)
        except (OSError, TimeoutError) as e:
            failures.append(f"{host}:{port}: {_describe(e)}")
            continue
        return await _handshake(sock, host, key_hash, context, deadline, timeouts, versions, service)
    raise ConnectFailed("; ".join(failures))


async def _handshake(sock: socket.socket, host: str, key_hash: bytes, context: ssl.SSLContext, deadline: float,
                     timeouts: Timeouts, versions: VersionRange, service: ServiceCredentials | None) -> Connected:
    stream: BlockStream | None = None
    session = None
    try:
        _keepalive(sock)
        async with asyncio.timeout_at(deadline):
            # server_hostname="" : no SNI (None would send nothing only for a non-TLS socket)
            reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="")
            stream = BlockStream(reader, writer, SMP_BLOCK_SIZE, read_timeout_s=timeouts.block_read_s,
                                 write_timeout_s=timeouts.write_s)
            ssl_obj = stream.ssl_object
            tls.verify_peer(ssl_obj, key_hash)  # before reading or writing anything
            hs = smp_client.client_handshake(await stream.read_block(), key_hash=key_hash,
                                             tls_unique=tls.tls_unique(ssl_obj),
                                             peer_chain=tls.peer_chain_der(ssl_obj), versions=versions,
                                             service=service)
            await stream.write_block(hs.client_hello)
            if hs.service_key is not None and service is not None:  # the server's third block
                service_id = read_service_response(await stream.read_block())
                session = ServiceSession(service_id, service.cert_hash, hs.service_key)
    except ServiceRefusedByServer as e:
        if stream is not None:
            stream.abort()
        raise ServiceRefused(f"{host}: {e}") from e
    except (ChainError, smp_client.SmpHandshakeRejected, ConnectionClosed, tls.TlsError, ssl.SSLError, OSError,
            TimeoutError, CodecError) as e:
        if stream is not None:
            stream.abort()
        else:
            sock.close()
        raise HandshakeFailed(f"{host}: {_describe(e)}") from e
    except BaseException:
        if stream is not None:
            stream.abort()
        else:
            sock.close()
        raise
    return Connected(stream, hs, host, session)


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionClosed):
        return f"closed by the server during the handshake ({e})"
    if isinstance(e, ChainError):
        return f"not the pinned server: {e}"
    return str(e) or type(e).__name__
