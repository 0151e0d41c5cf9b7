"""What the demo saw, and how it is told: pure (no I/O), so the summary is computed from events only.

The scenario records two kinds of events — a message sent on an SMP stand-in (`Sent`), a push as the
APNs simulator recorded it and the device decrypted it (`Seen`) — and everything printed is derived from
them: the live lines as events happen, and the summary table at the end. Nothing in the table is typed in
by hand, so a build that sends every message as an alert shows exactly that.

Queue ids never appear: queues are shown by labels ("queue A1": first queue on SMP server A).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final


class PushKind(enum.StrEnum):
    VERIFICATION = "verification"
    HIDDEN = "hidden"
    ALERT = "alert"
    OTHER = "other"


def classify(push_type: str | None, body: Mapping[str, Any]) -> PushKind:
    """From what APNs received: `apns-push-type` and the body (`aps.content-available` = hidden,
    `aps.mutable-content` with an alert = alert; a background push with `verification` = verification)."""
    aps = body.get("aps")
    data = body.get("notificationData")
    aps = aps if isinstance(aps, Mapping) else {}
    data = data if isinstance(data, Mapping) else {}
    if push_type == "background" and aps.get("content-available") == 1:
        return PushKind.VERIFICATION if "verification" in data else PushKind.HIDDEN
    if push_type == "alert" and aps.get("mutable-content") == 1 and "alert" in aps:
        return PushKind.ALERT
    return PushKind.OTHER


@dataclass(frozen=True)
class Item:
    """One notification inside a push, as the device decrypted it."""

    server: str  # "A", "B": which SMP stand-in
    queue: str  # "queue A1"
    message: str  # "msg 03"


@dataclass(frozen=True)
class Sent:
    phase: int
    server: str
    queue: str
    message: str


@dataclass(frozen=True)
class Seen:
    phase: int  # the phase during which it arrived
    number: int  # 1, 2, ... in order of arrival at the APNs simulator
    kind: PushKind
    push_type: str | None
    priority: int | None
    size: int
    items: tuple[Item, ...]  # oldest first; the last one caused the push

    @property
    def newest(self) -> Item | None:
        return self.items[-1] if self.items else None


@dataclass(frozen=True)
class Phase:
    number: int
    title: str
    policy: str  # as applied ("3/h, burst 3, overflow alert") or why it was not


@dataclass
class Record:
    phases: list[Phase] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)


# ---------------------------------------------------------------- live lines

KIND_TEXT: Final = {
    PushKind.VERIFICATION: "VERIFICATION",
    PushKind.HIDDEN: "HIDDEN (background)",
    PushKind.ALERT: "ALERT (visible)",
    PushKind.OTHER: "OTHER",
}


def sent_line(s: Sent) -> str:
    return f"  -> {s.message} sent on SMP server {s.server}, {s.queue}"


def seen_line(p: Seen) -> str:
    head = (f"  <- push {p.number}: {KIND_TEXT[p.kind]}, apns-push-type {p.push_type}, priority {p.priority}, "
            f"{p.size} bytes")
    if not p.items:
        return head
    newest = p.items[-1]
    carried = ", ".join(i.message for i in p.items)
    return (f"{head}\n     device decrypted {len(p.items)} notification(s) [{carried}]; newest: {newest.message} "
            f"from SMP server {newest.server}, {newest.queue}")


def missing_line(s: Sent) -> str:
    return f"  .. no push for {s.message} (held back or dropped by the policy)"


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class Row:
    label: str
    policy: str
    sent: int
    pushes: int
    hidden: int
    alert: int
    other: int
    own_push: int  # messages that were the newest item of a push (they caused it)
    reached: int  # messages the device decrypted from any push (a later push may carry an earlier one)


COLUMNS: Final = ("phase", "policy", "sent", "pushes", "hidden", "alert", "other", "own push", "on device")


def rows(record: Record) -> list[Row]:
    out = [_row(record, p.title, p.policy, {p.number}) for p in record.phases]
    out.append(_row(record, "total", "", {p.number for p in record.phases}))
    return out


def _row(record: Record, label: str, policy: str, phases: set[int]) -> Row:
    sent = [s for s in record.sent if s.phase in phases]
    pushes = [p for p in record.seen if p.phase in phases and p.kind is not PushKind.VERIFICATION]
    names = {s.message for s in sent}
    everything = [p for p in record.seen if p.kind is not PushKind.VERIFICATION]
    caused = {p.newest.message for p in everything if p.newest is not None}
    reached = {i.message for p in everything for i in p.items}
    return Row(
        label, policy, len(sent), len(pushes),
        sum(p.kind is PushKind.HIDDEN for p in pushes), sum(p.kind is PushKind.ALERT for p in pushes),
        sum(p.kind is PushKind.OTHER for p in pushes), len(names & caused), len(names & reached),
    )


def table(record: Record) -> list[str]:
    cells = [list(COLUMNS)] + [
        [r.label, r.policy, *(str(v) for v in (r.sent, r.pushes, r.hidden, r.alert, r.other, r.own_push, r.reached))]
        for r in rows(record)
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]

    def fmt(row: Sequence[str]) -> str:
        left = [row[i].ljust(widths[i]) for i in range(2)]
        right = [row[i].rjust(widths[i]) for i in range(2, len(row))]
        return "  ".join(left + right).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [fmt(cells[0]), rule, *(fmt(c) for c in cells[1:-1]), rule, fmt(cells[-1])]


LEGEND: Final = ("own push: messages that caused a push of their own; on device: messages the phone decrypted "
                  "from any push (each push carries the newest notifications, so a later push can bring an "
                  "earlier message)")


def notes(record: Record, budget_configured: bool) -> list[str]:
    """Plain-language reading of the table, from the same events."""
    total = rows(record)[-1]
    out = [LEGEND, f"{total.sent} messages sent, {total.pushes} message pushes reached APNs "
           f"({total.hidden} hidden, {total.alert} alert); the device decrypted {total.reached} of the "
           f"{total.sent} messages."]
    if budget_configured and total.hidden == 0 and total.pushes:
        out.append("No hidden pushes: the budget was used up before the demo's messages (or the policy is "
                   "SimpleX parity, hidden_per_hour = 0).")
    if total.sent > total.reached:
        out.append(f"{total.sent - total.reached} message(s) did not reach the device during the demo: under "
                   "overflow = defer the server holds one hidden push for the device, sent when its budget "
                   "returns (20 min at 3/h) with the newest 6 notifications; under drop they wait on the SMP "
                   "servers until the app fetches them.")
    return out
