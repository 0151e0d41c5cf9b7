"""Reading a Haskell ntf-server's PostgreSQL store (§6.1) with psycopg 3, read-only.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so the counts, the servers and the rows
are one consistent snapshot even if the Haskell server is still running. Tokens, subscriptions and last
notifications are streamed through three server-side cursors ordered by token id and merged, so one token
with everything hanging off it is in memory at a time, whatever the size of the database (bytea orders
bytewise in PostgreSQL, as bytes do in Python).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from ntf_server.importer.mapping import NtfRow, ServerRow, SubRow, TokenRow

DEFAULT_DATABASE: Final = "postgresql://ntf@/ntf_server_store"  # as the Haskell server (§6.1)
DEFAULT_SCHEMA: Final = "ntf_server"
TABLES: Final = ("tokens", "smp_servers", "subscriptions", "last_notifications")
_FETCH: Final = 2000


class SourceError(Exception):
    """The Haskell database cannot be read (connection, missing schema or table): the message says which."""


@dataclass(frozen=True, slots=True)
class TokenGroup:
    token: TokenRow
    subscriptions: list[SubRow] = field(default_factory=list)
    notifications: list[NtfRow] = field(default_factory=list)


_TOKENS: Final = ("SELECT token_id, push_provider, push_provider_token, status, verify_key, dh_priv_key, dh_secret, "
                  "reg_code, cron_interval, cron_sent_at, updated_at FROM {}.tokens ORDER BY token_id")
# {assoc}: the column, or `false` in a database from before migration 20250517_service_cert (no service
# columns yet); the same for the servers' {service}.
_SUBS: Final = ("SELECT subscription_id, token_id, smp_server_id, smp_notifier_id, smp_notifier_key, status, "
                "{assoc} FROM {}.subscriptions ORDER BY token_id, subscription_id")
_NTFS: Final = ("SELECT token_id, subscription_id, sent_at, nmsg_nonce, nmsg_data FROM {}.last_notifications "
                "ORDER BY token_id, sent_at")
_SERVERS: Final = ("SELECT smp_server_id, smp_host, smp_port, smp_keyhash, {service}, {svc_cert}, {svc_key} "
                   "FROM {}.smp_servers")


class HaskellDb:
    """One read-only snapshot of the database; use as a context manager."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self._conn = conn
        self._schema = sql.Identifier(schema)
        self.schema = schema
        self.orphans = (0, 0)  # (subscriptions, notifications) of no token, after `token_groups`
        self._optional: dict[str, sql.Composable] = {}

    def __repr__(self) -> str:
        return f"<HaskellDb schema={self.schema!r}>"

    @classmethod
    def open(cls, url: str, schema: str) -> HaskellDb:
        try:
            conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as e:
            raise SourceError(f"cannot connect to the Haskell database: {_first_line(e)}") from e
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        db = cls(conn, schema)
        try:
            db._check_tables()
        except psycopg.Error as e:
            conn.close()
            raise SourceError(f"reading the Haskell database failed: {_first_line(e)}") from e
        except BaseException:
            conn.close()
            raise
        return db

    def __enter__(self) -> HaskellDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(self._schema, **self._optional)

    def _check_tables(self) -> None:
        rows = self._conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (self.schema,)
        ).fetchall()
        missing = sorted(set(TABLES) - {r[0] for r in rows})
        if missing:
            raise SourceError(
                f"schema {self.schema!r} has no table {', '.join(missing)}: is this a Haskell ntf-server "
                "database (v6.3 or later, PostgreSQL store)? See --schema."
            )
        cols = {(r[0], r[1]) for r in self._conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s", (self.schema,)
        ).fetchall()}
        self._optional = {
            "assoc": sql.Identifier("ntf_service_assoc") if ("subscriptions", "ntf_service_assoc") in cols
            else sql.SQL("false"),
            "service": sql.Identifier("ntf_service_id") if ("smp_servers", "ntf_service_id") in cols
            else sql.SQL("NULL"),
            # the service certificate per server: from migration 20251219_service_cert_per_server
            "svc_cert": sql.Identifier("ntf_service_cert") if ("smp_servers", "ntf_service_cert") in cols
            else sql.SQL("NULL"),
            "svc_key": sql.Identifier("ntf_service_priv_key") if ("smp_servers", "ntf_service_priv_key") in cols
            else sql.SQL("NULL"),
        }

    def counts(self) -> dict[str, int]:
        try:
            return self._counts()
        except psycopg.Error as e:
            raise SourceError(f"reading the Haskell database failed: {_first_line(e)}") from e

    def _counts(self) -> dict[str, int]:
        out = {}
        for t in TABLES:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(self._schema, sql.Identifier(t))
            row = self._conn.execute(query).fetchone()
            out[t] = int(row[0]) if row else 0
        return out

    def servers(self) -> list[ServerRow]:
        try:
            rows = self._conn.execute(self._q(_SERVERS)).fetchall()
        except psycopg.Error as e:
            raise SourceError(f"reading the Haskell database failed: {_first_line(e)}") from e
        return [ServerRow(int(r[0]), r[1], r[2], bytes(r[3]), *(None if v is None else bytes(v) for v in r[4:7]))
                for r in rows]

    def __iter__(self) -> Iterator[TokenGroup]:
        """`token_groups`, with a database error while reading turned into a `SourceError`."""
        try:
            yield from self.token_groups()
        except psycopg.Error as e:
            raise SourceError(f"reading the Haskell database failed: {_first_line(e)}") from e

    def token_groups(self) -> Iterator[TokenGroup]:
        """Each token with its subscriptions and last notifications, in token id order."""
        subs = _peekable(self._rows("import_subs", _SUBS, _sub_row))
        ntfs = _peekable(self._rows("import_ntfs", _NTFS, _ntf_row))
        for token in self._rows("import_tokens", _TOKENS, _token_row):
            group = TokenGroup(token)
            tid = token.token_id
            group.subscriptions.extend(subs.take_while_key(tid))
            group.notifications.extend(ntfs.take_while_key(tid))
            yield group
        subs.take_while_key(None)
        ntfs.take_while_key(None)
        self.orphans = (subs.skipped, ntfs.skipped)

    def _rows(self, name: str, query: str, make: Any) -> Iterator[Any]:
        with self._conn.cursor(name=name) as cur:
            cur.itersize = _FETCH
            cur.execute(self._q(query))
            for r in cur:
                yield make(r)


def _token_row(r: Any) -> TokenRow:
    return TokenRow(bytes(r[0]), r[1], bytes(r[2]), r[3], bytes(r[4]), bytes(r[5]), bytes(r[6]), bytes(r[7]),
                    int(r[8]), None if r[9] is None else int(r[9]), None if r[10] is None else int(r[10]))


def _sub_row(r: Any) -> SubRow:
    return SubRow(bytes(r[0]), bytes(r[1]), None if r[2] is None else int(r[2]), bytes(r[3]), bytes(r[4]), r[5],
                  bool(r[6]))


def _ntf_row(r: Any) -> NtfRow:
    return NtfRow(bytes(r[0]), bytes(r[1]), r[2], bytes(r[3]), bytes(r[4]))


class _peekable:
    """Rows ordered by token id, taken one token at a time (rows of tokens absent from `tokens` cannot exist:
    foreign keys; any such row would be skipped, not attached to another token)."""

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._next: Any = next(it, None)
        self.skipped = 0

    def take_while_key(self, tid: bytes | None) -> list[Any]:
        """The rows of token `tid`; rows before it belong to no token and are counted (None: all the rest)."""
        out = []
        while self._next is not None and (tid is None or self._next.token_id < tid):
            self.skipped += 1
            self._next = next(self._it, None)
        while self._next is not None and self._next.token_id == tid:
            out.append(self._next)
            self._next = next(self._it, None)
        return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
