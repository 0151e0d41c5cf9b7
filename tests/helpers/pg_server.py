"""A real PostgreSQL server for the import tests (tests/importer, tests/e2e) and tests/bench/import_bench.py.

Debian's `postgresql` package (binaries under /usr/lib/postgresql/<version>/bin; `.ci/run` installs it),
or `$PG_BIN` naming such a bin directory. The cluster lives in a fresh temporary directory, listens on a
Unix socket only, trusts local connections, and skips fsync (test data). PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` user the Debian package creates (else `nobody`).
Missing PostgreSQL skips the tests with the reason, except in CI (`$CI` set), where it fails them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SUPERUSER = "ntf"  # the Haskell server's default role (postgresql://ntf@/ntf_server_store)
DATABASE = "ntf_server_store"


def find_bin_dir() -> Path | None:
    explicit = os.environ.get("PG_BIN")
    candidates = [Path(explicit)] if explicit else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name),
                         reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "postgres").is_file()), None)


def _version(name: str) -> int:
    return int(name) if name.isdigit() else 0


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(user)
    raise RuntimeError("running as root and there is no postgres or nobody user to run PostgreSQL as")


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ntf-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = _run_as()

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={self.sock}"

    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@/postgres?host={self.sock}"

    def start(self) -> None:
        self.sock.mkdir()
        if self._user is not None:
            for p in (self.root, self.sock):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
        user = self._user.pw_uid if self._user is not None else None
        group = self._user.pw_gid if self._user is not None else None
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, user=user, group=group,
        )
        self._proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-k", str(self.sock), "-c", "listen_addresses=",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user, group=group,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url(), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # "smart" shutdown; the tests have closed their connections
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL not found (apt-get install postgresql, or set PG_BIN): import tests need it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = PgServer(bin_dir)
    server.start()
    yield server
    server.stop()


SCHEMA_SQL = Path(__file__).with_name("ntf_server_schema.sql")


def load_schema(url: str, schema: str = "ntf_server") -> None:
    """A fresh copy of the Haskell server's schema (spec §6.1) named `schema` (dropped first)."""
    ddl = SCHEMA_SQL.read_text().replace("ntf_server.", f"{schema}.").replace("SCHEMA ntf_server", f"SCHEMA {schema}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]
        conn.execute(ddl)  # type: ignore[arg-type]
