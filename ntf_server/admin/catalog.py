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
    "smp_subscription_answers": "NSUB answers from SMP servers, by the subscription status they give",
    "periodic_pushes": "Periodic (TCRN) check-messages pushes, by outcome",
    "deferred_pushes": "Deferred pushes (overflow = defer): sent when the budget returned, or dropped as stale "
    "(token gone or no longer active)",
}

GROUPED: Final = {
    "smp_sub_ok": Grouped("smp_subscription_answers", "answer", "ok"),
    "smp_sub_auth": Grouped("smp_subscription_answers", "answer", "auth"),
    "smp_sub_service": Grouped("smp_subscription_answers", "answer", "service"),
    "smp_sub_err": Grouped("smp_subscription_answers", "answer", "err"),
    "smp_sub_end": Grouped("smp_subscription_answers", "answer", "end"),
    "smp_sub_deld": Grouped("smp_subscription_answers", "answer", "deleted"),
    # periodic pushes: the rest of the family is defined in push/model.py
    "ntf_cron_skipped": Grouped("periodic_pushes", "outcome", "skipped"),
    "ntf_cron_skipped_budget": Grouped("periodic_pushes", "outcome", "skipped_budget"),
    "ntf_deferred_sent": Grouped("deferred_pushes", "event", "sent"),
    "ntf_deferred_stale": Grouped("deferred_pushes", "event", "stale"),
}

HELP: Final = {
    "tkn_expired": "Tokens deleted after store.expire_tokens_after_days unused",
    "tkn_expired_unverified": "Tokens deleted for not being verified within store.expire_unverified_after_h",
    "smp_connected": "SMP connections established",
    "smp_connect_failed": "SMP connection attempts that failed",
    "smp_disconnected": "SMP connections lost",
    "smp_links_ended": "SMP server links ended because no live subscription needed them",
    "smp_service_subscribed": "NSUBS answered with the count and IdsHash we stored",
    "smp_service_drift": "NSUBS answered with another count or IdsHash: tied queues subscribed one by one",
    "smp_service_failed": "NSUBS failed (ERR SERVICE drops the ties) or timed out: queues subscribed one by one",
    "smp_service_ended": "ENDS: another session of our service took its queues",
    "smp_service_refused": "SMP servers that refused our service certificate (plain sessions from then on)",
    "smp_service_changed": "SMP servers that gave our service another id: ties dropped",
    "smp_nsub_sent": "NSUB commands sent to SMP servers",
    "smp_nsub_answered": "NSUB commands answered (late answers included)",
    "smp_timeouts": "NSUB or PING commands SMP servers did not answer in time",
    "smp_unexpected": "Unexpected SMP responses",
    "smp_sub_ok": "NSUB answered OK: subscription ACTIVE",
    "smp_sub_auth": "NSUB answered ERR AUTH: subscription AUTH",
    "smp_sub_service": "NSUB answered with a service error: subscription SERVICE",
    "smp_sub_err": "NSUB answered with another error: subscription ERR",
    "smp_sub_end": "Subscriptions ended by the SMP server (END)",
    "smp_sub_deld": "Queues deleted on the SMP server (DELD)",
    "sub_bad_key": "Subscriptions whose stored notifier key could not be read",
    "ntf_received": "Message notifications (NMSG) received from SMP servers",
    "ntf_received_forgotten": "NMSGs for subscriptions deleted since they were subscribed",
    "ntf_cron_skipped": "Periodic pushes skipped: a hidden push reached the device within the interval",
    "ntf_cron_skipped_budget": "Periodic pushes skipped: the device's hidden-push budget was empty",
    "ntf_deferred_sent": "Deferred pushes sent when the device's budget returned",
    "ntf_deferred_stale": "Deferred pushes dropped: the token was deleted or is no longer active",
}


PER_SERVER: Final = frozenset({"ntf_received"})  # also kept per SMP server


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
