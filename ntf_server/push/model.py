"""What the push pipeline moves (push/pipeline.py): a ``Push``, the kinds of push and their counters (defined
here, counted by push/sending.py), and the settings that size the pipeline together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ntf_server.observability.metricdef import Counter, Family
from ntf_server.push.retry import Backoff, JitteredBackoff
from ntf_server.store.outbox import PushKindCode
from ntf_server.store.records import TokenRecord

if TYPE_CHECKING:
    from ntf_server.config import PushConfig

DEFAULT_BACKOFF: Final[Backoff] = JitteredBackoff(1.0, 120.0)

# the pushes' counters (metricdef: /metrics, /v1/stats and the worker sums read these definitions)
VERIFICATION_PUSHES: Final = Family("verification_pushes", "outcome", "Verification pushes (TNEW/TRPL), by outcome")
MESSAGE_PUSHES: Final = Family("message_pushes", "outcome", "Message notification pushes, by outcome")
PERIODIC_PUSHES: Final = Family("periodic_pushes", "outcome", "Periodic (TCRN) check-messages pushes, by outcome")
PUSH_RETRIES: Final = Family("push_retries", "event", "Pushes APNs asked us to retry later (429, 5xx, timeout, "
                             "lost connection), by kind and event")
NTF_VRF_DELIVERED: Final = Counter("ntf_vrf_delivered", "Verification pushes accepted by APNs", VERIFICATION_PUSHES,
                                   "delivered")
NTF_VRF_FAILED: Final = Counter("ntf_vrf_failed", "Verification pushes that failed", VERIFICATION_PUSHES, "failed")
NTF_VRF_INVALID_TKN: Final = Counter("ntf_vrf_invalid_tkn", "Verification pushes APNs refused because the device "
                                     "token is invalid", VERIFICATION_PUSHES, "invalid_token")
NTF_VRF_RETRIED: Final = Counter("ntf_vrf_retried", "Verification pushes scheduled for a retry", PUSH_RETRIES,
                                 "verification_scheduled")
NTF_VRF_RETRY_EXPIRED: Final = Counter("ntf_vrf_retry_expired", "Verification pushes given up at "
                                       "push.retry_deadline_s", PUSH_RETRIES, "verification_expired")
# message pushes carry their notice's SMP server (Push.hosts): delivered and failed are kept per server too
NTF_DELIVERED: Final = Counter("ntf_delivered", "Message pushes accepted by APNs", MESSAGE_PUSHES, "delivered",
                               per_server=True)
NTF_FAILED: Final = Counter("ntf_failed", "Message pushes that failed", MESSAGE_PUSHES, "failed", per_server=True)
NTF_INVALID_TKN: Final = Counter("ntf_invalid_tkn", "Message pushes APNs refused because the device token is "
                                 "invalid", MESSAGE_PUSHES, "invalid_token")
NTF_RETRIED: Final = Counter("ntf_retried", "Message pushes scheduled for a retry", PUSH_RETRIES, "message_scheduled")
NTF_RETRY_EXPIRED: Final = Counter("ntf_retry_expired", "Message pushes given up at push.retry_deadline_s",
                                   PUSH_RETRIES, "message_expired")
NTF_CRON_DELIVERED: Final = Counter("ntf_cron_delivered", "Periodic pushes accepted by APNs", PERIODIC_PUSHES,
                                    "delivered")
NTF_CRON_FAILED: Final = Counter("ntf_cron_failed", "Periodic pushes that failed", PERIODIC_PUSHES, "failed")


@dataclass(frozen=True, slots=True)
class PushKind:
    """A kind of push and its counters; ``confirms``: a delivered push confirms the token (§4.5)."""

    name: str
    delivered: Counter
    failed: Counter
    invalid: Counter
    retried: Counter
    expired: Counter
    confirms: bool = False

    def __repr__(self) -> str:
        return f"<PushKind {self.name}>"


VERIFICATION: Final = PushKind("verification push", NTF_VRF_DELIVERED, NTF_VRF_FAILED, NTF_VRF_INVALID_TKN,
                               NTF_VRF_RETRIED, NTF_VRF_RETRY_EXPIRED, confirms=True)
MESSAGE: Final = PushKind("message push", NTF_DELIVERED, NTF_FAILED, NTF_INVALID_TKN, NTF_RETRIED, NTF_RETRY_EXPIRED)
# Periodic (TCRN) pushes: their own delivered/failed counters (§6.4); retries counted with message pushes.
PERIODIC: Final = PushKind("periodic push", NTF_CRON_DELIVERED, NTF_CRON_FAILED, NTF_INVALID_TKN, NTF_RETRIED,
                           NTF_RETRY_EXPIRED)
KIND_OF: Final = {PushKindCode.ALERT: MESSAGE, PushKindCode.HIDDEN: MESSAGE, PushKindCode.DEFERRED: MESSAGE,
                  PushKindCode.PERIODIC: PERIODIC, PushKindCode.VERIFICATION: VERIFICATION}
BACKGROUND: Final = frozenset({PushKindCode.HIDDEN, PushKindCode.DEFERRED, PushKindCode.PERIODIC,
                                PushKindCode.VERIFICATION})
@dataclass(slots=True)
class Push:
    """One push to send: built once, sent again unchanged while this process retries it."""

    code: PushKindCode
    token: TokenRecord
    body: bytes = field(repr=False)
    first_at: float  # Unix seconds of the first try (the retry deadline counts from it)
    outbox_id: int = 0  # its outbox entry (0: none yet)
    tries: int = 0
    # the SMP server of the notice that caused a message push: delivered/failed also counted per own server
    hosts: tuple[str, ...] = field(default=(), repr=False)

    @property
    def kind(self) -> PushKind:
        return KIND_OF[self.code]


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Sizes that belong together: ``store_calls`` + 2 (acks, retry claims) + ``store_gate`` + what the
    handlers and the subscriber pool use must fit the store's connection pool (``check``)."""

    senders: int = 256  # pushes waiting for APNs' answer at once (the client allows 4 x 500 streams)
    batch_max: int = 256  # notices per store call
    store_calls: int = 2  # store calls of notices in flight at once
    intake_per_server: int = 1024  # notices of one SMP server accepted and not yet stored
    outgoing: int = 4096  # pushes built and not yet sent
    store_gate: int = 16  # per-push store calls (confirm, invalid, retry) in flight at once
    verification_workers: int = 4
    verification_queue: int = 32768  # full: the push is dropped, counted (the app repeats TNEW)
    lease_s: float = 30.0  # a push not answered within this is sent again by whoever claims it
    retry_scan_s: float = 1.0
    retry_batch: int = 256
    backoff: Backoff = DEFAULT_BACKOFF
    deadline_s: float = 600.0
    verifications_per_hour: int = 10
    shutdown_grace_s: float = 10.0

    @classmethod
    def of(cls, push: PushConfig) -> PipelineSettings:
        return cls(backoff=JitteredBackoff(push.retry_backoff_base_s, push.retry_backoff_cap_s),
                   deadline_s=push.retry_deadline_s, verifications_per_hour=push.verifications_per_hour,
                   lease_s=push.claim_lease_s,
                   shutdown_grace_s=push.shutdown_grace_s)

    @property
    def redis_connections(self) -> int:
        return self.store_calls + 2 + self.store_gate

    def check(self, redis_pool: int, reserved: int) -> None:
        """Start-up check: the push path's store calls and ``reserved`` others fit a pool of ``redis_pool``."""
        if self.redis_connections + reserved > redis_pool:
            raise ValueError(f"the push pipeline needs {self.redis_connections} Redis connections and the rest of "
                             f"the server {reserved}: more than the pool's {redis_pool}")
        if min(self.senders, self.batch_max, self.store_calls, self.intake_per_server, self.outgoing,
               self.store_gate, self.verification_workers) < 1 or self.lease_s <= 0:
            raise ValueError("every pipeline size must be at least 1")


DEFAULT_SETTINGS: Final = PipelineSettings()
