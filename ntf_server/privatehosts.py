"""Which SMP server hosts point into private networks (``[subscriber] allow_private_hosts``).

Anyone can name any SMP server in ``SNEW``, and the subscriber then connects there: without this check,
an unverified client could make the server knock on its own loopback or LAN services. Two places refuse
such hosts when ``allow_private_hosts`` is off: ``SNEW`` (an IP literal or ``localhost`` in the address,
answered ``ERR CMD PROHIBITED``), and the subscriber's direct connect (a name that *resolves* to such an
address is not connected to; names are never resolved at ``SNEW``, where a lookup would cost a round trip
per request and could change before the connect anyway). Hosts reached through the SOCKS proxy are
resolved by the proxy (Tor refuses private addresses by itself).

"Private" is every address ``ipaddress`` does not call global (private, loopback, link-local, shared
CGNAT space, unspecified, reserved, documentation) and multicast, for IPv4, IPv6 and IPv4-mapped IPv6 (so
``::ffff:127.0.0.1`` is loopback).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

_LOCAL_NAMES: Final = ("localhost", ".localhost")


def private_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast  # not global: private, loopback, link-local, shared (CGNAT), ...


def private_literal(host: str) -> bool:
    """An IP literal in a private range, or a ``localhost`` name. Other names: False (see module doc)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == _LOCAL_NAMES[0] or name.endswith(_LOCAL_NAMES[1]):
        return True
    try:
        return private_address(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return False


def any_private_literal(hosts: Iterable[str]) -> bool:
    return any(private_literal(h) for h in hosts)
