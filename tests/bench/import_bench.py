"""`import-simplex` benchmark (run by hand, not collected by pytest).

Starts a throwaway PostgreSQL cluster (Debian's binaries, as the import tests do), loads a generated Haskell
database of T tokens (about 7 subscriptions per token and some last notifications), starts an embedded
Redis/Valkey (AOF on, as in production), and imports it 3 times, each into a fresh key prefix, then once
more into the last prefix (a re-run, which writes nothing) and once as a dry run. Prints rows/s (tokens +
subscriptions + last notifications read) for each kind, median of 3 for the real import.

    .venv/bin/python tests/bench/import_bench.py                  # 10,000 tokens (~70,000 subscriptions)
    .venv/bin/python tests/bench/import_bench.py --tokens 2000    # quick run
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers.haskell_data import generate, load
from helpers.pg_server import PgServer, find_bin_dir, load_schema

from ntf_server import cli
from ntf_server.config import Config, load_config
from ntf_server.importer.command import import_simplex
from ntf_server.importer.writer import Counts
from ntf_server.store.embedded import EmbeddedRedis


async def timed(cfg: Config, url: str, dry_run: bool) -> tuple[float, Counts]:
    t = time.perf_counter()
    counts = await import_simplex(cfg, url, "ntf_server", dry_run=dry_run, out=io.StringIO(), tty=False,
                                  hold_state_lock=False)
    return time.perf_counter() - t, counts


async def bench(cfg: Config, url: str) -> None:
    rates = []
    counts = Counts()
    for _ in range(3):
        prefix = f"bench:{secrets.token_hex(4)}:"
        cfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, key_prefix=prefix))
        seconds, counts = await timed(cfg, url, dry_run=False)
        rows = counts.tokens + counts.subs + counts.ntfs
        rates.append(rows / seconds)
        print(f"import: {rows} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s")
    print(f"import median: {statistics.median(rates):,.0f} rows/s "
          f"({counts.tokens} tokens, {counts.subs} subscriptions, {counts.ntfs} last notifications)")
    seconds, again = await timed(cfg, url, dry_run=False)
    assert again.changed_nothing
    print(f"re-run (nothing to write): {(again.tokens + again.subs + again.ntfs) / seconds:,.0f} rows/s")
    seconds, dry = await timed(cfg, url, dry_run=True)
    print(f"dry run: {(dry.tokens + dry.subs + dry.ntfs) / seconds:,.0f} rows/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=10_000)
    args = ap.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL not found (apt-get install postgresql, or set PG_BIN)")
    pg = PgServer(bin_dir)
    pg.start()
    tmp = Path(tempfile.mkdtemp(prefix="ntf-import-bench-"))
    redis = EmbeddedRedis(tmp / "redis")
    try:
        load_schema(pg.url)
        t = time.perf_counter()
        load(pg.url, generate(n_tokens=args.tokens))
        print(f"generated and loaded the Haskell database in {time.perf_counter() - t:.1f} s")
        url = redis.start_blocking()
        assert cli.main(["--config-dir", str(tmp / "cfg"), "init"]) == 0
        cfg = load_config(tmp / "cfg")
        cfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=url))
        asyncio.run(bench(cfg, pg.url))
    finally:
        redis.stop_blocking()
        pg.stop()


if __name__ == "__main__":
    main()
