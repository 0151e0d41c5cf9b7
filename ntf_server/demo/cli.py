"""The `ntf-server demo` command: runs `script.run_demo` and maps its outcome to an exit status."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Final

from ntf_server.demo.phone import DemoFailed
from ntf_server.demo.script import run_demo
from ntf_server.server import OPERATOR_ERRORS

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it


async def _main(messages: int, more: int, keep_running: bool) -> None:
    stop: asyncio.Event | None = None
    if keep_running:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await run_demo(messages=messages, more=more, keep_running=stop)


def run(messages: int, more: int, keep_running: bool) -> int:
    # The server's own warnings (e.g. Redis advice) would interleave with the story: errors only.
    logging.basicConfig(level=logging.ERROR, format="  [log] %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_main(messages, more, keep_running))
    except (DemoFailed, OSError, TimeoutError, *OPERATOR_ERRORS) as e:
        print(f"ntf-server demo: failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("ntf-server demo: interrupted; everything stopped and removed", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK
