"""The state of one SMP server's link, one enum for the pool, its links, admin and the SMP client (STYLE 2).

A connection (subscriber/client.py) goes IDLE → CONNECTING → UP → DOWN (closed; never reused); a link,
which makes one connection after another, moves by the table below.

The state moves by the table ``TRANSITIONS``; a pair not in it is a bug (``ValueError``). ENDED (no live
subscription needs the server) and DROPPED (handed over, or fenced out: another instance owns the server)
are final: the pool forgets the link, and a later subscription or lease starts a new one. Admin shows the
live links' states (``SHOWN_STATES``); ``LinkState`` is a ``StrEnum``, so JSON and metric labels carry its
value.
"""

from __future__ import annotations

import enum
from typing import Final


class LinkState(enum.StrEnum):
    """One SMP server's link, as admin shows it (``/v1/stats`` ``smp_connections``, ``/metrics``)."""

    IDLE = "idle"  # made, not yet connecting
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # lost or unreachable: waiting to reconnect
    ENDED = "ended"  # no live subscription needs the server (final)
    DROPPED = "dropped"  # handed over or fenced out: another instance's now (final)


SHOWN_STATES: Final = (LinkState.IDLE, LinkState.CONNECTING, LinkState.UP, LinkState.DOWN)  # a live link's


class LinkEvent(enum.Enum):
    CONNECT = "connect"
    CONNECTED = "connected"
    FAILED = "failed"  # the connection attempt failed (or the store did before it)
    LOST = "lost"
    NOT_NEEDED = "not needed"
    GONE = "gone"  # handed over, dropped or fenced out


_S, _E = LinkState, LinkEvent
TRANSITIONS: Final[dict[tuple[LinkState, LinkEvent], LinkState]] = {
    (_S.IDLE, _E.CONNECT): _S.CONNECTING, (_S.DOWN, _E.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, _E.CONNECT): _S.CONNECTING,  # a refused service certificate: straight away again
    (_S.CONNECTING, _E.CONNECTED): _S.UP, (_S.CONNECTING, _E.FAILED): _S.DOWN, (_S.UP, _E.LOST): _S.DOWN,
    **{(s, _E.NOT_NEEDED): _S.ENDED for s in (_S.IDLE, _S.CONNECTING, _S.UP, _S.DOWN)},
    **{(s, _E.GONE): _S.DROPPED for s in LinkState},
}


def next_state(state: LinkState, event: LinkEvent) -> LinkState:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise ValueError(f"link: {event.value} while {state.value}") from None
