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
