"""Host selection for one SMP server (§3.3 "Host selection"): which of its hosts to try, in which
order, and how each is reached. Pure: no I/O, tested as a table.

An SMP server address may list several hosts for the same server (same key hash), typically a public name
and an ``.onion`` name (§4.1: ``smp4.simplex.im`` is expanded to ``[smp4.simplex.im, o5vm….onion]``). The
connection code (``connect.open_smp``) tries the hosts in the order given until one answers, so the plan
is an ordered list of :class:`Route`.

The rules, and where they differ from the Haskell ntf-server on purpose:

* No proxy: public hosts direct, in address order; ``.onion`` hosts cannot be reached
  (:attr:`Via.NO_ROUTE`) and come last, so a server with only ``.onion`` hosts fails with a message that
  says why instead of "no host". (Haskell picks one host, the first public one, and never falls back.)
* ``socks_mode = onion`` (default, as Haskell): public hosts direct first, then ``.onion`` hosts through
  the proxy as a fallback. Public first matches Haskell's ntf-server default ``host_mode = public``: a
  direct connection has lower latency and does not depend on Tor being up; the fallback keeps a server
  whose public name is blocked or down subscribed. (Haskell has no fallback.)
* ``socks_mode = always``: every host through the proxy, ``.onion`` hosts first. When all traffic goes
  through Tor anyway, an onion service keeps it inside Tor (no exit relay, which may be blocked or
  throttled by the SMP server's hosting); public hosts remain as a fallback through a Tor exit. This is
  Haskell's client behaviour with a proxy (``HMOnionViaSocks``) combined with ``SMAlways``.

IP-address hosts count as public. Names are never resolved here: ``.onion`` is recognised by its suffix.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, assert_never

from ntf_server.config import SocksMode

ONION_SUFFIX: Final = ".onion"


class Via(enum.Enum):
    DIRECT = "direct"  # TCP from this machine; the name is resolved here, afresh on every connect
    PROXY = "proxy"  # SOCKS5 CONNECT with the host *name*: the proxy resolves it (never resolved here)
    NO_ROUTE = "no route"  # an .onion host without a proxy: tried last only to explain the failure


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    via: Via


def is_onion(host: str) -> bool:
    return host.lower().rstrip(".").endswith(ONION_SUFFIX)


def plan_routes(hosts: Sequence[str], *, proxy: bool, mode: SocksMode) -> tuple[Route, ...]:
    """The hosts of one SMP server in the order to try them, each with how to reach it (module docstring)."""
    public = [h for h in hosts if not is_onion(h)]
    onion = [h for h in hosts if is_onion(h)]
    if not proxy:
        return (*_routes(public, Via.DIRECT), *_routes(onion, Via.NO_ROUTE))
    match mode:
        case SocksMode.ONION:
            return (*_routes(public, Via.DIRECT), *_routes(onion, Via.PROXY))
        case SocksMode.ALWAYS:
            return (*_routes(onion, Via.PROXY), *_routes(public, Via.PROXY))
        case _:
            assert_never(mode)


def _routes(hosts: Sequence[str], via: Via) -> tuple[Route, ...]:
    return tuple(Route(h, via) for h in hosts)
