"""What the counters still named by the ``Stat`` enum mean, and which are shown as one labelled family.

The way out: a counter is defined as a ``metricdef.Counter`` next to the code that counts it (its help
text and family there; see metricdef.py). The counters not moved yet are described here, keyed by their
external name (``Stat`` value), and registered as definitions at import (``_register``), so the renderers
see one registry. Moving a counter: delete its ``Stat`` member and its lines here, define it where it is
counted. A name left in both places fails at import (defined twice).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ntf_server.metricdef import Counter, Family, metric_name
from ntf_server.stats import Stat

__all__ = ["FAMILY_HELP", "GROUPED", "HELP", "PER_SERVER", "Grouped", "help_for", "metric_name"]


class Grouped(NamedTuple):
    family: str  # metric family without the ntf_ prefix and _total suffix
    label: str
    value: str


# families of counters shown with a label instead of one family each
FAMILY_HELP: Final = {
    "periodic_pushes": "Periodic (TCRN) check-messages pushes, by outcome",
    "deferred_pushes": "Deferred pushes (overflow = defer): sent when the budget returned, or dropped as stale "
    "(token gone or no longer active)",
}

GROUPED: Final = {
    # periodic pushes: the rest of the family is defined in push/model.py
    "ntf_cron_skipped": Grouped("periodic_pushes", "outcome", "skipped"),
    "ntf_cron_skipped_budget": Grouped("periodic_pushes", "outcome", "skipped_budget"),
    "ntf_deferred_sent": Grouped("deferred_pushes", "event", "sent"),
    "ntf_deferred_stale": Grouped("deferred_pushes", "event", "stale"),
}

HELP: Final = {
    "tkn_expired": "Tokens deleted after store.expire_tokens_after_days unused",
    "tkn_expired_unverified": "Tokens deleted for not being verified within store.expire_unverified_after_h",
    "ntf_cron_skipped": "Periodic pushes skipped: a hidden push reached the device within the interval",
    "ntf_cron_skipped_budget": "Periodic pushes skipped: the device's hidden-push budget was empty",
    "ntf_deferred_sent": "Deferred pushes sent when the device's budget returned",
    "ntf_deferred_stale": "Deferred pushes dropped: the token was deleted or is no longer active",
}


PER_SERVER: Final[frozenset[str]] = frozenset()  # also kept per SMP server (none left here)


def help_for(name: str) -> str:
    return HELP.get(name, f"Counter {name}")


def _register() -> None:
    families: dict[str, Family] = {}
    for stat in Stat:
        g = GROUPED.get(stat.value)
        family = None
        if g is not None:
            family = families.setdefault(g.family, Family(g.family, g.label, FAMILY_HELP[g.family]))
        Counter(stat.value, help_for(stat.value), family, g.value if g else "", stat.value in PER_SERVER)


_register()
