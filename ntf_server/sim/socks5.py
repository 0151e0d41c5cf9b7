"""A local SOCKS5 proxy stand-in (RFC 1928 CONNECT + RFC 1929 username/password), strict like Tor's
SocksPort with ``IsolateSOCKSAuth``, for tests and ``ntf-server demo``.

Theory of operation: per connection, with one deadline for the whole negotiation: the greeting must offer
username/password (0x02), else ``05 FF`` and close; the RFC 1929 sub-negotiation must carry a non-empty
username and password (1–255 bytes each), else ``01 01`` and close; then one request, of which only
CONNECT (0x01) is served (others: reply 0x07). The target name is resolved **here**, as Tor does:
``names`` maps names (e.g. a made-up ``.onion``) to a local IP; an unmapped ``.onion`` is "host
unreachable" (0x04); other names go to the system resolver. Every CONNECT is recorded
(:attr:`requests`: credentials, address type, host, port, outcome) so tests can check which credentials
each SMP server used and that names, not addresses, were sent. After a success reply, bytes are relayed
both ways until either side closes.

Standalone (try ``[subscriber] socks_proxy`` without Tor): ``python -m ntf_server.sim.socks5 --port 9050
--map <name>.onion=127.0.0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

VER: Final = 5
AUTH_VER: Final = 1
METHOD_USER_PASS: Final = 0x02
NO_ACCEPTABLE: Final = 0xFF
CMD_CONNECT: Final = 0x01
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
REP_OK, REP_FAILURE, REP_HOST_UNREACHABLE, REP_REFUSED, REP_CMD, REP_ATYP = 0x00, 0x01, 0x04, 0x05, 0x07, 0x08
NEGOTIATION_TIMEOUT_S: Final = 10.0
RELAY_CHUNK: Final = 65536


@dataclass(frozen=True, slots=True)
class SocksRequest:
    username: str
    password: str
    atyp: int  # ATYP_DOMAIN when the client sent a name (remote DNS)
    host: str
    port: int
    reply: int  # REP_OK when the CONNECT succeeded


class Refused(Exception):
    """The client broke the protocol or failed authentication: answered (when possible) and closed."""


class Socks5StandIn:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, names: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.names = dict(names or {})
        self.requests: list[SocksRequest] = []
        self.refused = 0  # connections closed for a protocol or authentication failure
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = port  # the bound port once started (when 0 was asked)

    def __repr__(self) -> str:
        return f"<Socks5StandIn {self.host}:{self.port} {len(self.requests)} requests, {self.refused} refused>"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):  # closing the sockets ends the handlers (no task cancelling)
            w.close()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=NEGOTIATION_TIMEOUT_S)
            for t in late:
                t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ one client

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            try:
                async with asyncio.timeout(NEGOTIATION_TIMEOUT_S):
                    upstream = await self._negotiate(reader, writer)
            except (Refused, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                self.refused += 1
                return
            if upstream is not None:
                self._writers.add(upstream[1])
                try:
                    await _relay(reader, writer, *upstream)
                finally:
                    self._writers.discard(upstream[1])
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        if ver != VER or n == 0:
            raise Refused("not SOCKS5")
        if METHOD_USER_PASS not in methods:  # Tor would accept "no auth", but then there is no isolation
            writer.write(bytes([VER, NO_ACCEPTABLE]))
            raise Refused("no username/password offered")
        writer.write(bytes([VER, METHOD_USER_PASS]))
        username, password = await _auth(reader, writer)
        ver, cmd, rsv, atyp = await reader.readexactly(4)
        if ver != VER or rsv != 0:
            raise Refused("bad request header")
        host = await _address(reader, atyp, writer)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd != CMD_CONNECT:
            self._answer(writer, SocksRequest(username, password, atyp, host, port, REP_CMD))
            return None
        try:
            target = await self._resolve(host)
            upstream = await asyncio.open_connection(target, port)
        except LookupError:
            self._answer(writer, SocksRequest(username, password, atyp, host, port, REP_HOST_UNREACHABLE))
            return None
        except OSError:
            self._answer(writer, SocksRequest(username, password, atyp, host, port, REP_REFUSED))
            return None
        self._answer(writer, SocksRequest(username, password, atyp, host, port, REP_OK))
        await writer.drain()
        return upstream

    def _answer(self, writer: asyncio.StreamWriter, request: SocksRequest) -> None:
        self.requests.append(request)
        writer.write(bytes([VER, request.reply, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]))  # bound address: unused

    async def _resolve(self, host: str) -> str:
        if host in self.names:
            return self.names[host]
        if host.endswith(".onion"):
            raise LookupError(host)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise LookupError(host) from e
        return str(infos[0][4][0])


async def _auth(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, str]:
    ver, ulen = await reader.readexactly(2)
    username = await reader.readexactly(ulen)
    (plen,) = await reader.readexactly(1)
    password = await reader.readexactly(plen)
    if ver != AUTH_VER or not username or not password:
        writer.write(bytes([AUTH_VER, 1]))
        raise Refused("bad username/password sub-negotiation")
    writer.write(bytes([AUTH_VER, 0]))
    return username.decode("latin-1"), password.decode("latin-1")


async def _address(reader: asyncio.StreamReader, atyp: int, writer: asyncio.StreamWriter) -> str:
    if atyp == ATYP_IPV4:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if atyp == ATYP_IPV6:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if atyp == ATYP_DOMAIN:
        (n,) = await reader.readexactly(1)
        name = await reader.readexactly(n)
        if not name:
            raise Refused("empty domain name")
        return name.decode("ascii", errors="replace")
    writer.write(bytes([VER, REP_ATYP, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]))
    raise Refused("unknown address type")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(RELAY_CHUNK):
                dst.write(data)
                await dst.drain()
        dst.close()  # one side ended: end the other, as a TCP proxy without half-close would

    try:
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
    finally:
        up_writer.close()


# ---------------------------------------------------------------- standalone


async def _main(args: argparse.Namespace) -> None:
    names = dict(m.split("=", 1) for m in args.map)
    async with Socks5StandIn(host=args.host, port=args.port, names=names) as proxy:
        print(f"started socks5 {proxy.host}:{proxy.port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ntf_server.sim.socks5", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one, printed at start)")
    p.add_argument("--map", action="append", default=[], metavar="NAME=IP",
                   help="resolve NAME (e.g. a made-up .onion) to IP; repeatable")
    args = p.parse_args(argv)
    if any("=" not in m for m in args.map):
        p.error("--map takes NAME=IP")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
