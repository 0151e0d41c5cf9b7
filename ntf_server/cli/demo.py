"""``demo``: everything local in one process, nothing to prepare (ntf_server/demo/)."""

from __future__ import annotations

from ntf_server.cli.common import CliError


def cmd_demo(messages: int, more: int, keep_running: bool) -> int:
    if not (1 <= messages <= 100 and 0 <= more <= 100):
        raise CliError("--messages: 1..100, --more: 0..100")
    from ntf_server.demo.cli import run  # like `start`: only the command that needs the server imports it

    return run(messages, more, keep_running)
