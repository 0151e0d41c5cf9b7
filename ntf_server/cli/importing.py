"""``import-simplex``: the users of a Haskell ntf-server, from its PostgreSQL database (ntf_server/importer/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from ntf_server.cli.common import EXIT_OK, CliError, load_initialised

IMPORT_DATABASE: Final = "postgresql://ntf@/ntf_server_store"  # the Haskell server's defaults (§6.1)
IMPORT_SCHEMA: Final = "ntf_server"


def cmd_import_simplex(config_dir: Path, database: str, schema: str, dry_run: bool) -> int:
    config, _ = load_initialised(config_dir)
    import asyncio

    from ntf_server.importer.command import ImportFailed, import_simplex
    from ntf_server.importer.reader import SourceError
    from ntf_server.importer.writer import report
    from ntf_server.observability.logsetup import scoped_logging
    from ntf_server.statelock import AlreadyRunning

    try:
        with scoped_logging(config.log):  # progress events (not on a terminal) and errors, as `start` logs
            counts = asyncio.run(import_simplex(config, database, schema, dry_run=dry_run, out=sys.stdout))
    except AlreadyRunning as e:
        raise CliError(f"{e}: stop it before importing") from e
    except (SourceError, ImportFailed) as e:
        raise CliError(str(e)) from e
    for line in report(counts, dry_run):
        print(line)
    return EXIT_OK


def cmd_move_store(config_dir: Path, url: str, prefix: str | None, cluster: bool, shards: int) -> int:
    config, _ = load_initialised(config_dir)
    import asyncio

    from ntf_server.importer.command import ImportFailed
    from ntf_server.importer.move import Target, move_store
    from ntf_server.observability.logsetup import scoped_logging
    from ntf_server.statelock import AlreadyRunning

    target = Target(url, prefix or config.redis.key_prefix, cluster, shards)
    try:
        with scoped_logging(config.log):
            moved = asyncio.run(move_store(config, target, out=sys.stdout))
    except AlreadyRunning as e:
        raise CliError(f"{e}: stop it before moving its data set") from e
    except ImportFailed as e:
        raise CliError(str(e)) from e
    for line in moved.report():
        print(line)
    print(f"next: set [redis] url, key_prefix, cluster and shards to the target ({shards} shard"
          f"{'s' if shards != 1 else ''}), then start the server")
    return EXIT_OK
