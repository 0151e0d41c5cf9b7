"""From ``[subscriber]`` settings to the pool's ``client_factory``: each SMP server's hosts in the order
``hosts.plan_routes`` gives, each reached the way the plan says (direct, through the SOCKS5 proxy with
that server's isolated credentials, or not at all, with a message saying why)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from functools import partial

from ntf_server.config import SubscriberConfig
from ntf_server.protocol.encoding import SMPServer
from ntf_server.subscriber.client import SmpClient
from ntf_server.subscriber.connect import TcpOpener, open_tcp, public_only
from ntf_server.subscriber.hosts import Route, Via, plan_routes
from ntf_server.subscriber.liveness import Timeouts
from ntf_server.subscriber.socks import SocksIsolation, socks_opener

ClientFactory = Callable[[SMPServer], SmpClient]


def routed_opener(routes: Sequence[Route], *, direct: TcpOpener, proxy: TcpOpener | None) -> TcpOpener:
    """A ``TcpOpener`` that reaches each host of ``routes`` its own way; any other host is refused."""
    vias = {r.host: r.via for r in routes}

    async def open_routed(host: str, port: int) -> socket.socket:
        via = vias.get(host)
        if via is Via.DIRECT:
            return await direct(host, port)
        if via is Via.PROXY and proxy is not None:
            return await proxy(host, port)
        if via is Via.NO_ROUTE:
            raise ConnectionError("an .onion host needs subscriber.socks_proxy (e.g. Tor's 127.0.0.1:9050)")
        raise ConnectionError(f"no route to {host}")  # not in the plan: a bug, refused rather than leaked

    return open_routed


def client_factory(
    settings: SubscriberConfig,
    *,
    isolation: SocksIsolation | None = None,
    direct: TcpOpener | None = None,
    context: ssl.SSLContext | None = None,
    timeouts: Timeouts | None = None,
) -> ClientFactory:
    """``SubscriberPool(client_factory=...)``: one :class:`SmpClient` per call, routed per ``settings``.
    ``isolation`` (default: a fresh per-process key) must outlive reconnects so a server keeps its
    credentials; one factory is made per process. ``direct`` (default: ``open_tcp``, refusing private
    addresses unless ``settings.allow_private_hosts``) opens the TCP connections that use no proxy."""
    proxy = settings.proxy()
    tcp: TcpOpener = direct or (  # names resolving into private networks are not connected to unless allowed
        open_tcp if settings.allow_private_hosts else partial(open_tcp, resolve=public_only()))
    isolation = isolation or SocksIsolation()
    timeouts = timeouts or Timeouts(connect_s=settings.connect_timeout_s, response_s=settings.response_timeout_s,
                                    ping_idle_s=settings.ping_idle_s,
                                    drop_after_silence_s=settings.drop_after_silence_s)

    def make(server: SMPServer) -> SmpClient:
        routes = plan_routes(server.hosts, proxy=proxy is not None, mode=settings.socks_mode)
        via_proxy = socks_opener(*proxy, isolation.credentials(server)) if proxy is not None else None
        return SmpClient(server, hosts=[r.host for r in routes], context=context, timeouts=timeouts,
                         opener=routed_opener(routes, direct=tcp, proxy=via_proxy))

    return make
