"""Every log event the server writes: its name, level, keys and meaning (for operators' alerts and parsers).

A line is ``ts=… level=… event=<name> <key>=<value>… [worker=n] logger=… msg="…"`` (or the same keys in one JSON
object). ``event`` and the keys below are stable: a new release may add events and keys, never rename or
drop one without saying so in the upgrade notes. ``msg`` is for humans and may change. A plain log call
(libraries, rare debug lines) is ``event=message`` with only ``msg``. Values that name a device token,
token id, subscription id, notifier id or key are short keyed hashes (``tkn:3f9a1c``, ntf_server/
sensitive.py): the same value has the same tag for the life of one process, so lines can be correlated.

``ntf_server.observability.logevents`` refuses an event that is not listed here, or with other keys (in tests), and
``tests/test_logevents.py`` checks that every event name the code uses is listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

RESERVED_KEYS: Final = frozenset({"ts", "level", "event", "logger", "msg", "exc"})
PLAIN: Final = "message"  # the event name of a plain ``log.info("text")`` call


@dataclass(frozen=True, slots=True)
class EventSpec:
    level: int
    keys: tuple[str, ...]
    text: str  # the ``msg`` of the line: ``str.format`` over the keys
    doc: str
    # Keys whose values are public and random-looking (the server fingerprint): not passed through the
    # secret-shape scrubber, which would blank them. Never a key that could hold a token, id or key.
    public: tuple[str, ...] = ()


def _e(level: int, keys: str, text: str, doc: str, public: str = "") -> EventSpec:
    return EventSpec(level, tuple(keys.split()), text, doc, tuple(public.split()))


def _counted(name: str, level: int, keys: str, doc: str) -> dict[str, EventSpec]:
    """A ``CountedLog`` event: the first occurrence of a window at once, then one ``.repeated`` summary."""
    first = _e(level, f"{keys} reason window_s", "", f"{doc} (the first in a window of window_s; the rest are "
                                                     f"counted into {name}.repeated)")
    rest = _e(level, f"{keys} count window_s reasons", "",
              f"{doc}: count more times in the last window_s, by reason (reasons: 'Reason=n,…')")
    return {name: first, f"{name}.repeated": rest}


INF, W, E, D, C = logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG, logging.CRITICAL

EVENTS: Final[dict[str, EventSpec]] = {
    PLAIN: _e(D, "", "", "a plain log line: only msg (level as logged)"),
    # ---- server life
    "server.started": _e(INF, "address listen apns redis policy admin socks",
                         "started on {listen}; APNs {apns}; Redis {redis}; policy {policy}; admin {admin}; "
                         "SOCKS {socks}",
                         "start-up summary: server address (ntf://fingerprint@host:port, the address apps use), "
                         "listen address, enabled APNs environments with hosts, Redis mode, push policy in force "
                         "and where it comes from, admin URL or off, SOCKS proxy for SMP or off",
                         public="address"),
    "server.stopping": _e(INF, "reason", "shutting down: {reason}", "shutdown begins (signal or a failed part)"),
    "server.draining": _e(INF, "grace_s", "sending queued pushes for up to {grace_s} s",
                          "graceful stop: the SMP reads stopped, the push pipeline drains"),
    "server.part_failed": _e(C, "part error", "{part} failed: {error}; stopping the server",
                             "a long-lived part raised; the process exits non-zero (systemd restarts it)"),
    "server.part_ended": _e(C, "part", "{part} ended unexpectedly; stopping the server", "a part returned"),
    "server.parts_stuck": _e(E, "timeout_s", "server parts did not stop within {timeout_s} s; closing the rest anyway",
                             "shutdown did not finish in time"),
    # ---- the supervisor ([server] workers above 1; supervisor/supervisor.py)
    "supervisor.started": _e(INF, "workers port", "{workers} workers serve port {port}",
                             "every worker started and serves; the supervisor watches them"),
    "supervisor.stopping": _e(INF, "reason", "stopping every worker: {reason}", "SIGTERM/SIGINT: every worker drains"),
    "supervisor.worker_exited": _e(C, "worker pid status delay_s restarts",
                                   "worker {worker} (pid {pid}) ended ({status}); starting it again in {delay_s} s",
                                   "a worker died (its own log says why); restarts counts them since start"),
    "supervisor.worker_started": _e(INF, "worker pid", "worker {worker} started again (pid {pid})",
                                    "a restarted worker serves again"),
    "supervisor.worker_failing": _e(C, "worker status failures",
                                    "worker {worker} ended {failures} times in a row ({status}); stopping",
                                    "a worker cannot keep running: the supervisor stops (exit status 1)"),
    "supervisor.worker_stopped": _e(INF, "worker pid status", "worker {worker} (pid {pid}) stopped ({status})",
                                    "a worker stopped at shutdown"),
    "supervisor.worker_killed": _e(E, "worker pid timeout_s",
                                   "worker {worker} (pid {pid}) did not stop within {timeout_s} s; killed",
                                   "a worker did not drain in time at shutdown (SIGKILL)"),
    "listener.started": _e(INF, "bind port", "listening on {bind}:{port}", "the NTF (TLS) listener accepts clients"),
    "listener.connection_failed": _e(E, "error", "connection failed: {error}",
                                     "a client connection ended with an unexpected error (traceback in exc)"),
    **_counted("listener.handshake_failed", INF, "", "an NTF handshake failed"),
    "admin.started": _e(INF, "url", "admin API on {url}", "the admin HTTP API listens"),
    # ---- Redis
    "redis.config_advice": _e(W, "advice", "redis: {advice}", "Redis settings that risk data (e.g. no AOF)"),
    "store.records_authenticated": _e(W, "tokens subscriptions unreadable",
                                      "store upgraded: MACs added to {tokens} tokens, {subscriptions} subscriptions "
                                      "sealed to their tokens, {unreadable} records unreadable (left as they were)",
                                      "once, at the first start after upgrading to authenticated records"),
    "redis.down": _e(W, "", "redis unreachable: answering ERR STORE until it is back",
                     "the store became unreachable; requests get ERR STORE"),
    "redis.up": _e(W, "down_s", "redis reachable again after {down_s} s", "the store is back"),
    "redis.embedded.exited": _e(E, "status data_dir", "embedded redis exited with status {status}; restarting it "
                                "on {data_dir}", "the embedded Redis child died"),
    "redis.embedded.restarted": _e(W, "pid", "embedded redis restarted (pid {pid})", "it runs again"),
    # ---- requests
    **_counted("request.store_error", W, "", "a request was answered ERR STORE"),
    **_counted("registration.refused", INF, "", "a registration was refused over its quota"),
    **_counted("subscription.refused", INF, "", "an SNEW was refused over its rate quota"),
    **_counted("request.over_budget", INF, "", "a request was refused over the command budget"),
    # ---- subscriber (SMP)
    **_counted("smp.connect_failed", INF, "", "an SMP server was unreachable; retrying with backoff"),
    **_counted("smp.disconnected", INF, "", "an SMP connection was lost; reconnecting"),
    "smp.store_unavailable": _e(W, "error", "subscriber: store unavailable ({error}); reconnecting to the SMP "
                                "server", "the store stayed away while serving an SMP connection"),
    "smp.service_fallback": _e(W, "reason count", "subscriber: SMP service subscription not usable ({reason}, "
                               "{count}); subscribing the queues one by one",
                               "drift, ERR SERVICE, a refused certificate or a new service id"),
    "smp.mark_inactive_failed": _e(W, "count", "subscriber: could not mark {count} subscriptions INACTIVE",
                                   "informational; the next connection sets them again"),
    "smp.notifications_lost": _e(E, "count", "{count} notifications lost: the store stayed unavailable",
                                 "NMSGs received but not stored"),
    "lease.gained": _e(INF, "server token", "subscribing SMP server #{server}: lease taken (token {token})",
                       "this instance took the lease of an SMP server (its number in the store, not its address)"),
    "lease.lost": _e(W, "server token reason", "stopped subscribing SMP server #{server}: lease lost ({reason})",
                     "a lease was taken by another instance after it expired (taken), or could not be renewed "
                     "in time (unconfirmed): the connection stops at once"),
    "lease.predecessor_released": _e(INF, "count", "freed {count} SMP server leases of the previous start",
                                     "the previous process on this state directory died holding leases "
                                     "(kill -9): freed now rather than after their expiry"),
    "lease.fenced_out": _e(W, "", "stopped an SMP connection: its server's lease is another instance's now",
                           "a status write carried a lease Redis no longer holds (this instance was paused or cut "
                           "off past the lease time): nothing was written, the connection stops"),
    "lease.given_up": _e(INF, "server token", "handed SMP server #{server} over to rebalance (token {token})",
                         "an instance joined: this one held more than its fair share of subscriptions; the "
                         "connection stopped, then the lease was released for the joiner to take"),
    "lease.store_failed": _e(W, "error", "leases: store call failed ({error}); retrying next round",
                             "leases could not be renewed or taken this round; held ones are given up before "
                             "they can expire"),
    "lease.handoff_dropped": _e(W, "count", "{count} new subscriptions not handed to their SMP server's owner",
                                "the owner subscribes them at its next connection (they are stored NEW)"),
    "resubscribe.none": _e(INF, "", "no subscriptions to resubscribe", "start-up: nothing to resubscribe"),
    "resubscribe.started": _e(INF, "servers subscriptions",
                              "resubscribing up to {subscriptions} subscriptions on {servers} SMP servers",
                              "start-up resubscription begins"),
    "resubscribe.progress": _e(INF, "servers_done servers answered subscriptions rate_per_s eta_s",
                               "resubscribing: {servers_done}/{servers} SMP servers done, {answered}/"
                               "{subscriptions} answered, {rate_per_s}/s, ETA {eta_s} s",
                               "every 10 s and when a server is done (eta_s empty when unknown)"),
    "resubscribe.done": _e(INF, "servers answered elapsed_s",
                           "resubscribed {answered} subscriptions on {servers} SMP servers in {elapsed_s} s",
                           "start-up resubscription finished"),
    # ---- pushes
    **_counted("push.failed", INF, "kind", "a push of kind (verification, message, periodic) failed"),
    "push.token_invalid": _e(D, "kind reason token", "{kind}: device token invalid ({reason}), {token}",
                             "APNs rejected a device token; the token is marked INVALID"),
    "push.retry": _e(D, "kind attempt reason token", "{kind}: retry {attempt} after {reason}, {token}",
                     "a push will be retried"),
    "push.gave_up": _e(D, "kind reason token", "{kind} failed: {reason}, {token}", "one push failed for good"),
    "push.retry_dropped": _e(D, "kind token", "{kind} retry dropped: the token changed or is gone, {token}",
                             "a waiting retry was for a token that changed"),
    "push.stopped": _e(INF, "waiting in_flight",
                       "stopped with {waiting} push retries waiting and {in_flight} unsent, kept for the next start",
                       "shutdown"),
    **_counted("push.not_sent", W, "", "a verification push was not sent (the device's hourly cap, or a full queue)"),
    **_counted("scheduler.store_error", W, "part",
               "the deferred-push or periodic-push scheduler could not reach Redis; it retries every scan"),
    "scheduler.unexpected_error": _e(E, "part error", "{part}: push failed unexpectedly: {error}",
                                     "a bug in one deferred or periodic push; traceback in exc"),
    "push.unexpected_error": _e(E, "error", "push failed unexpectedly: {error}", "a bug; traceback in exc"),
    # ---- operations
    "policy.changed": _e(INF, "before after", "push policy changed: {before} -> {after}",
                         "the admin API changed the push policy (JSON documents)"),
    "policy.unchanged": _e(INF, "policy", "push policy set, unchanged: {policy}", "a PUT that changed nothing"),
    "policy.stored_unusable": _e(E, "key error", "stored push policy {key} is unusable ({error}); using the "
                                 "config file's [push] settings", "a hand-edited policy in Redis"),
    "housekeeping.expired_unused": _e(INF, "tokens subscriptions",
                                      "expired {tokens} unused tokens ({subscriptions} subscriptions)",
                                      "tokens unused for store.expire_tokens_after_days were deleted"),
    "housekeeping.expired_unverified": _e(INF, "tokens after_h",
                                          "expired {tokens} tokens never verified within {after_h} h",
                                          "registrations never verified were deleted"),
    "jobs.lease_taken": _e(INF, "job", "this instance now runs {job} for the data set",
                           "a job run once per data set (expiry, census): this instance took its lease (at start, "
                           "or after its holder stopped or died: ntf_server/jobs.py)"),
    "jobs.lease_lost": _e(W, "job", "this instance lost the lease of {job}; its run (if any) was cancelled",
                          "the lease expired before a renewal: this instance was paused or cut off from Redis"),
    "jobs.run_failed": _e(W, "job error", "{job} failed: {error}; next run in one interval",
                          "the store failed during a run of a job run once per data set"),
    "housekeeping.skipped": _e(W, "error", "token expiry skipped: {error}", "the store failed; next round retries"),
    "import.progress": _e(INF, "done total unit percent rate_per_s elapsed_s",
                          "{done}/{total} {unit} ({percent}%), {rate_per_s}/s, {elapsed_s} s",
                          "import progress every 5 s when the output is not a terminal"),
}


def render_markdown() -> str:
    """The catalogue as a Markdown table for the operators' docs (``python -m ntf_server.observability.logcatalog``)."""
    rows = ["| event | level | keys | meaning |", "|---|---|---|---|"]
    for name, spec in sorted(EVENTS.items()):
        level = "as logged" if name == PLAIN else logging.getLevelName(spec.level).lower()
        keys = " ".join(f"`{k}`" for k in spec.keys) or "-"
        rows.append(f"| `{name}` | {level} | {keys} | {spec.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
