"""The copy behind `ntf-server move-store` (ntf_server/importer/move.py): one data set's tokens, subscriptions,
last notifications, aliases, push policy and service credentials into another (another Redis or Cluster,
prefix or shard count), written with the import's writer (importing.py, sharded_import.py) so each token
is written atomically into the shard it belongs to. What is not carried: that module's docstring."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from ntf_server.protocol.smp_service import ServiceCredentials
from ntf_server.store.codec import decode_ln
from ntf_server.store.importing import ImportedNotification, ImportedToken, TokenImport
from ntf_server.store.policy import PolicyStore
from ntf_server.store.records import TokenRecord
from ntf_server.store.redis import RedisStore
from ntf_server.store.services import carry_service
from ntf_server.store.sub_aliases import ALIAS_KEY, SubIdAliases

PAGE = 200  # tokens read and written per round trip


@dataclass
class Moved:
    tokens: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # TokenImport value -> tokens
    subs: int = 0
    subs_written: int = 0
    ntfs_written: int = 0
    aliases: int = 0
    services: int = 0
    policy: bool = False
    deferred_dropped: int = 0

    def report(self) -> list[str]:
        out = [f"tokens: {self.tokens} read"]
        out += [f"  {n} {what}" for what, n in sorted(self.outcomes.items())]
        out.append(f"subscriptions: {self.subs} read, {self.subs_written} written")
        out.append(f"last notifications written: {self.ntfs_written}")
        out.append(f"aliases carried from an earlier import: {self.aliases}")
        out.append(f"SMP service credentials carried: {self.services}; push policy: "
                   f"{'carried' if self.policy else 'none stored'}")
        if self.deferred_dropped:
            out.append(f"pending deferred pushes not carried: {self.deferred_dropped} (their notifications were)")
        return out


class _NoCredentials(Exception):
    pass


def _none() -> ServiceCredentials:
    raise _NoCredentials


async def copy_data_set(source: RedisStore, dest: RedisStore, now: float, out: TextIO) -> Moved:
    """Every token of ``source`` into ``dest`` (module docstring); a line per page to ``out``."""
    moved = Moved()
    writer = dest.importer()
    for shard in source.shards:
        d = shard.dataset
        start = 0
        while tids := [bytes(t) for t in await d.call(d.r.zrange, d.keys.g("used"), start, start + PAGE - 1)]:
            start += len(tids)
            async with d.pipeline() as pipe:  # a page's last notifications, unverified and deferred marks at once
                for tid in tids:
                    pipe.hgetall(d.keys.token(tid) + ":ln")
                    pipe.zscore(d.keys.g("unv"), tid)
                    pipe.zscore(d.keys.g("dfr"), tid)
                flat: list[Any] = await pipe.execute()
            extra = {tid: flat[3 * i: 3 * i + 3] for i, tid in enumerate(tids)}
            items = [await _token(shard, tok, *extra[tok.token_id][:2])
                     for tok in await shard._tokens.get_tokens(tids)]
            moved.tokens += len(items)
            moved.subs += sum(len(i.subscriptions) for i in items)
            moved.deferred_dropped += sum(1 for _, _, dfr in extra.values() if dfr is not None)
            for res in await writer.write(items, now):
                moved.outcomes[res.outcome.value] += 1
                moved.subs_written += res.subscriptions_written
                moved.ntfs_written += res.notifications_written
            print(f"{moved.tokens} tokens copied", file=out)
    moved.aliases = await _aliases(source, dest)
    raw = await PolicyStore(source.dataset).raw()
    if raw is not None:
        home = dest.dataset
        await home.call(home.r.set, PolicyStore(home).key, raw)
        moved.policy = True
    for server in await source.servers_with_subscriptions():
        state = await source.service_state(server)
        if state.service_id is None:
            continue
        try:
            creds = await source.service_credentials(server, _none)
        except _NoCredentials:
            continue
        await carry_service(dest, server, creds, state.service_id)
        moved.services += 1
    if moved.outcomes.get(TokenImport.ID_TAKEN.value) or moved.outcomes.get(TokenImport.DUPLICATE.value):
        print("some tokens were not written: the target holds other tokens under their ids or device tokens",
              file=out)
    return moved


async def _token(shard: RedisStore, tok: TokenRecord, lns: dict[bytes, bytes], unv: float | None) -> ImportedToken:
    """The token as the import writes it: its subscriptions, its last notifications (``lns``: sub id -> value,
    as stored) and when it was created if it is still unverified (``unv``: its score in `unv`)."""
    subs = await shard.token_subscriptions(tok.token_id)
    by_sid = {s.sub_id: s for s in subs}
    notes = []
    for sid, value in lns.items():
        if (sub := by_sid.get(bytes(sid))) is not None:
            n = decode_ln(sub.server, sub.notifier_id, bytes(value))
            notes.append(ImportedNotification(bytes(sid), n.received_at_ms, n.nonce, n.enc_meta))
    return ImportedToken(tok, subs, notes, None if unv is None else int(unv))


async def _aliases(source: RedisStore, dest: RedisStore) -> int:
    """The source's own aliases (an earlier import's ids -> the source's), now -> the target's ids."""
    aliases = SubIdAliases(*dest.datasets)
    home = dest.dataset
    n = 0
    for d in source.datasets:
        pairs: dict[bytes, bytes] = await d.call(d.r.hgetall, d.keys.prefix + ALIAS_KEY)
        for old, ours in pairs.items():
            await home.call(home.r.hset, home.keys.prefix + ALIAS_KEY, bytes(old), await aliases.resolve(bytes(ours)))
            n += 1
    return n
