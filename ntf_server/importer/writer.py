"""The import itself: read (reader.py) → map and validate (mapping.py) → write (store/importing.py), with
counts of everything read, written, already there and refused (by reason) — no row is dropped silently.

`target=None` is the dry run: every row is read, mapped and validated exactly as for a real run, and
nothing is written anywhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from ntf_server.importer import mapping as M
from ntf_server.importer.progress import Progress
from ntf_server.importer.reader import HaskellDb, TokenGroup
from ntf_server.protocol.encoding import SMPServer
from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.importing import ImportedToken, StoreImporter, TokenImport
from ntf_server.store.records import TokenStatusKind

BATCH: Final = 100  # tokens per pipelined round trip


@dataclass
class Counts:
    """Rows read and what became of them (`refused` is keyed "what: reason")."""

    tokens: int = 0
    tokens_written: int = 0
    tokens_already: int = 0
    subs_already: int = 0  # of tokens already imported
    ntfs_already: int = 0
    subs: int = 0
    subs_written: int = 0
    ntfs: int = 0
    ntfs_written: int = 0
    servers: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    token_statuses: Counter[str] = field(default_factory=Counter)
    sub_statuses: Counter[str] = field(default_factory=Counter)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def changed_nothing(self) -> bool:
        return self.tokens_written == 0 and self.subs_written == 0 and self.ntfs_written == 0


class Importer:
    def __init__(self, db: HaskellDb, target: StoreImporter | None, progress: Progress | None, now: float) -> None:
        self._db = db
        self._target = target
        self._progress = progress
        self._now = now
        self.counts = Counts()
        self._servers: dict[int, SMPServer | M.Rejected] = {}
        self.services: dict[SMPServer, tuple[ServiceCredentials, bytes]] = {}  # carried: certificate, id
        self._carried: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"<Importer {'dry run' if self._target is None else 'writing'} {self.counts.tokens} tokens read>"

    async def run(self) -> Counts:
        for row in self._db.servers():
            self.counts.servers += 1
            mapped = M.map_server(row)
            self._servers[row.smp_server_id] = mapped
            if isinstance(mapped, M.Rejected):
                self.counts.refused[f"SMP server: {mapped.reason}"] += 1
            else:
                self._service(row, mapped)
        self._carried = frozenset(n for n, srv in self._servers.items()
                                  if not isinstance(srv, M.Rejected) and srv in self.services)
        batch: list[ImportedToken] = []
        for group in self._db:
            item = self._map(group)
            if item is not None:
                batch.append(item)
            if len(batch) >= BATCH:
                await self._flush(batch)
                batch = []
            if self._progress is not None:
                self._progress.advance(1)
        await self._flush(batch)
        orphan_subs, orphan_ntfs = self._db.orphans
        self.counts.subs += orphan_subs
        self.counts.ntfs += orphan_ntfs
        self._refuse("subscription", "its token does not exist", orphan_subs)
        self._refuse("last notification", "its token does not exist", orphan_ntfs)
        if self._progress is not None:
            self._progress.finish()
        return self.counts

    def _service(self, row: M.ServerRow, server: SMPServer) -> None:
        service = M.map_service(row)
        if isinstance(service, M.Rejected):
            self.counts.notes[f"SMP server service not carried: {service.reason}"] += 1
        elif service is not None:
            self.services[server] = service
            self.counts.notes["SMP server service carried (certificate, id, ties)"] += 1

    def _refuse(self, what: str, reason: str, n: int = 1) -> None:
        if n:
            self.counts.refused[f"{what}: {reason}"] += n

    def _map(self, g: TokenGroup) -> ImportedToken | None:
        c = self.counts
        c.tokens += 1
        c.subs += len(g.subscriptions)
        c.ntfs += len(g.notifications)
        token = M.map_token(g.token, self._now)
        if isinstance(token, M.Rejected):
            self._refuse("token", token.reason)
            self._refuse("subscription", "its token was refused", len(g.subscriptions))
            self._refuse("last notification", "its token was refused", len(g.notifications))
            return None
        subs = []
        for row in g.subscriptions:
            sub = M.map_sub(row, self._servers, self._carried)
            if isinstance(sub, M.Rejected):
                self._refuse("subscription", sub.reason)
                continue
            c.notes.update(sub.notes)
            subs.append(sub.record)
        kept_ids = {s.sub_id for s in subs}
        ntfs = []
        for nrow in g.notifications:
            ntf = M.map_notification(nrow)
            if isinstance(ntf, M.Rejected):
                self._refuse("last notification", ntf.reason)
            elif ntf.sub_id not in kept_ids:
                self._refuse("last notification", "its subscription was refused or is another token's")
            else:
                ntfs.append(ntf)
        ntfs, older = M.newest(ntfs)
        self._refuse("last notification", "older than the newest 6 of its token", older)
        # Never verified, as far as we can tell: not ACTIVE and no subscription (SNEW needs a verified token
        # in practice). Such a token gets the normal window to be verified, counted from the import.
        unverified = token.status.kind is not TokenStatusKind.ACTIVE and not subs
        return ImportedToken(token, subs, ntfs, int(self._now) if unverified else None)

    async def _flush(self, batch: list[ImportedToken]) -> None:
        if not batch:
            return
        c = self.counts
        if self._target is None:
            for item in batch:
                self._written(item, len(item.subscriptions), len(item.notifications))
            return
        for item, res in zip(batch, await self._target.write(batch, self._now), strict=True):
            if res.outcome is TokenImport.WRITTEN:
                self._written(item, res.subscriptions_written, res.notifications_written)
                for _ in res.refused_subscriptions:
                    self._refuse("subscription", "its SMP queue or id is already another token's subscription")
                self._refuse("last notification", "its subscription was refused",
                             len(item.notifications) - res.notifications_written)
            elif res.outcome is TokenImport.ALREADY_THERE:  # left as it is: the running server may have changed it
                c.tokens_already += 1
                c.subs_already += len(item.subscriptions)
                c.ntfs_already += len(item.notifications)
            else:
                self._refuse("token", res.outcome.value)
                self._refuse("subscription", "its token was refused", len(item.subscriptions))
                self._refuse("last notification", "its token was refused", len(item.notifications))

    def _written(self, item: ImportedToken, subs: int, ntfs: int) -> None:
        c = self.counts
        c.tokens_written += 1
        c.subs_written += subs
        c.ntfs_written += ntfs
        c.token_statuses[item.token.status.to_text()] += 1
        for s in item.subscriptions:
            c.sub_statuses[s.status.kind.value] += 1


def report(c: Counts, dry_run: bool) -> list[str]:
    """The summary printed at the end (no ids, keys or device tokens)."""
    verb = "would be imported" if dry_run else "imported"
    lines = [
        f"read: {c.tokens} tokens, {c.subs} subscriptions, {c.ntfs} last notifications, {c.servers} SMP servers",
        f"{verb}: {c.tokens_written} tokens, {c.subs_written} subscriptions, {c.ntfs_written} last notifications",
    ]
    if c.tokens_already:
        lines.append(f"already imported (left as they are): {c.tokens_already} tokens, {c.subs_already} "
                     f"subscriptions, {c.ntfs_already} last notifications")
    if c.token_statuses:
        lines.append("tokens by status: " + ", ".join(f"{k} {v}" for k, v in sorted(c.token_statuses.items())))
    if c.sub_statuses:
        lines.append("subscriptions by status: " + ", ".join(f"{k} {v}" for k, v in sorted(c.sub_statuses.items())))
    for note, n in sorted(c.notes.items()):
        lines.append(f"changed to fit: {n} × {note}")
    if c.refused:
        lines.append(f"NOT imported: {c.refused_total} rows")
        lines += [f"  {n} × {why}" for why, n in sorted(c.refused.items())]
    if dry_run:
        lines.append("dry run: nothing was written")
    elif c.changed_nothing:
        lines.append("nothing to do: everything was imported before, nothing changed")
    return lines
