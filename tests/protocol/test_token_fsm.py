"""The token state machine (spec §4.5): every (status, event) pair against the spec's table, written out
here independently of the implementation's comprehension-built table."""

from __future__ import annotations

import itertools

import pytest

from ntf_server.protocol.ntf_types import TokenStatusKind as S
from ntf_server.protocol.token_fsm import (
    SUB_COMMANDS_ALLOWED,
    TRANSITIONS,
    TokenEvent as E,
    changing_sources,
    next_status,
    sources,
)

NEW, REG, INV, CONF, ACT, EXP = S.NEW, S.REGISTERED, S.INVALID, S.CONFIRMED, S.ACTIVE, S.EXPIRED

# Rows: status before; columns: TNEW repeat, verification delivered, TVFY, TRPL, token invalid. None = refused.
SPEC: dict[S, tuple[S | None, S | None, S | None, S | None, S | None]] = {
    NEW: (REG, CONF, None, REG, INV),
    REG: (REG, CONF, ACT, REG, INV),
    INV: (REG, CONF, None, REG, INV),
    CONF: (CONF, CONF, ACT, REG, INV),
    ACT: (ACT, ACT, ACT, REG, INV),
    EXP: (REG, CONF, None, REG, INV),
}
EVENTS = (E.TNEW_REPEAT, E.VERIFICATION_DELIVERED, E.TVFY, E.TRPL, E.TOKEN_INVALID)


@pytest.mark.parametrize(("status", "event"), list(itertools.product(S, E)))
def test_every_pair(status: S, event: E) -> None:
    assert next_status(status, event) == SPEC[status][EVENTS.index(event)]


def test_table_has_nothing_else() -> None:
    assert set(TRANSITIONS) <= set(itertools.product(S, E))
    assert len(TRANSITIONS) == sum(to is not None for row in SPEC.values() for to in row)


def test_derived_groups() -> None:
    assert sources(E.TVFY) == {REG, CONF, ACT}  # allowTokenVerification
    assert changing_sources(E.VERIFICATION_DELIVERED) == {NEW, REG, INV, EXP}  # never downgrades CONF/ACT
    assert changing_sources(E.TNEW_REPEAT) == {NEW, INV, EXP}
    assert {ACT, INV, EXP} == SUB_COMMANDS_ALLOWED  # allowNtfSubCommands
