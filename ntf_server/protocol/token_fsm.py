"""The token status state machine as a table (§4.5, STYLE 2).

Theory of operation: a token's status changes only through the events below. ``TRANSITIONS`` maps
``(status, event)`` to the next status; a pair that is not in the table is not allowed (the NTF handlers
answer ``ERR AUTH``; a push outcome that finds no pair changes nothing). The store enforces the sources of
a transition atomically with its write (compare-and-set), using ``sources(event)`` derived from this table,
so the two can never disagree. ``TDEL`` deletes the token in any status and is not a transition.
"""

from __future__ import annotations

import enum
from typing import Final

from ntf_server.protocol.ntf_types import TokenStatusKind as S


class TokenEvent(enum.Enum):
    TNEW_REPEAT = "repeat TNEW (same device token, verify key and DH key)"
    VERIFICATION_DELIVERED = "verification push accepted by the provider"
    TVFY = "TVFY with the right code"
    TRPL = "TRPL (new device token)"
    TOKEN_INVALID = "provider says the device token is invalid"  # noqa: S105 - not a password


E = TokenEvent
_ALL: Final = tuple(S)

TRANSITIONS: Final[dict[tuple[S, TokenEvent], S]] = {
    # repeat registration: re-send the verification; reset the status where verification is not allowed
    **{(s, E.TNEW_REPEAT): s for s in (S.REGISTERED, S.CONFIRMED, S.ACTIVE)},
    **{(s, E.TNEW_REPEAT): S.REGISTERED for s in (S.NEW, S.INVALID, S.EXPIRED)},
    # a delivered verification push confirms the token, but never downgrades a confirmed or active one
    **{(s, E.VERIFICATION_DELIVERED): S.CONFIRMED for s in (S.NEW, S.REGISTERED, S.INVALID, S.EXPIRED)},
    **{(s, E.VERIFICATION_DELIVERED): s for s in (S.CONFIRMED, S.ACTIVE)},
    # the code may be checked only while verification is allowed (allowTokenVerification)
    **{(s, E.TVFY): S.ACTIVE for s in (S.REGISTERED, S.CONFIRMED, S.ACTIVE)},
    **{(s, E.TRPL): S.REGISTERED for s in _ALL},
    **{(s, E.TOKEN_INVALID): S.INVALID for s in _ALL},
}

# Statuses in which subscription commands are accepted (``allowNtfSubCommands``): a permission, not a
# transition. INVALID and EXPIRED are included so that an app can clean up after its token died.
SUB_COMMANDS_ALLOWED: Final = frozenset({S.ACTIVE, S.INVALID, S.EXPIRED})


def next_status(current: S, event: TokenEvent) -> S | None:
    """The status after ``event``, or None if the event is not allowed in ``current``."""
    return TRANSITIONS.get((current, event))


def sources(event: TokenEvent) -> frozenset[S]:
    """Statuses from which ``event`` is allowed."""
    return frozenset(s for (s, e) in TRANSITIONS if e is event)


def changing_sources(event: TokenEvent) -> frozenset[S]:
    """Statuses that ``event`` actually changes (the others keep their status)."""
    return frozenset(s for (s, e), to in TRANSITIONS.items() if e is event and to is not s)
