"""A worker process's entry point (processes.py says how the supervisor starts and speaks to it).

The worker is the whole server (server.py ``serve_until``) in its ``WorkerRole``; it stops gracefully
(``wind_down``) on SIGTERM, SIGINT or when its stdin ends (the supervisor is gone), and exits 1 when it
cannot start or a part fails, for the supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from ntf_server.config import CONFIG_FILE, Config, load_config
from ntf_server.observability.logsetup import setup_logging
from ntf_server.server import EXIT_FAILED, OPERATOR_ERRORS, NtfServer, serve_until
from ntf_server.supervisor.role import WorkerRole

STDIN = 0


def _first_line(fd: int) -> str:
    """The line the supervisor wrote, read byte by byte so nothing after it is buffered away."""
    out = bytearray()
    while (byte := os.read(fd, 1)) and byte != b"\n":
        out += byte
    return out.decode()


async def _serve(config: Config, role: WorkerRole) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(STDIN, "rb", 0))

    async def orphaned() -> None:
        await reader.read()  # end of file: the supervisor is gone (kill -9 included)
        stop.set()

    def announce(server: NtfServer) -> None:
        assert server.summary is not None
        sys.stdout.write(json.dumps({"port": server.port, "summary": server.summary.lines()}) + "\n")
        sys.stdout.flush()
        # Nothing else goes to the supervisor: what serve_until prints later ("Shutting down...") must not
        # block on, or break (EPIPE), a pipe the supervisor no longer reads or that died with it.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process

    watch = asyncio.create_task(orphaned())
    try:
        await serve_until(NtfServer(config, role), announce, stop)
    finally:
        watch.cancel()


def main(argv: list[str]) -> int:
    config_dir, index, count, port, restarts = argv
    config = load_config(Path(config_dir) / CONFIG_FILE)
    setup_logging(config.log, worker=int(index))
    role = WorkerRole(int(index), int(count), int(port), _first_line(STDIN), int(restarts))
    try:
        asyncio.run(_serve(config, role))
    except OPERATOR_ERRORS as e:
        print(f"ntf-server: worker {role.index}: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
