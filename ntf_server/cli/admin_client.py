"""``stats``, ``status`` and ``policy``: the running server's admin API from the command line (remote.py is
the HTTP client; tables.py and screen.py turn its JSON into text)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from ntf_server.cli.common import EXIT_OK, CliError
from ntf_server.config import CONFIG_FILE, load_config

T = TypeVar("T")


def _admin(config_dir: Path) -> Any:
    from ntf_server.cli.remote import AdminClient, RemoteError

    if not (config_dir / CONFIG_FILE).is_file():
        raise CliError(f"{config_dir} is not initialised (no {CONFIG_FILE}): use the server's --config-dir")
    try:
        return AdminClient(load_config(config_dir, secrets=False))
    except RemoteError as e:
        raise CliError(str(e)) from e

def _remote(call: Callable[[], T], context: str = "") -> T:
    from ntf_server.cli.remote import RemoteError

    try:
        return call()
    except RemoteError as e:
        raise CliError(f"{context}{e}") from e

def cmd_stats(config_dir: Path, *, all_counters: bool = False, raw: bool = False) -> int:
    from ntf_server.cli.tables import stats_lines

    with _admin(config_dir) as admin:
        data = _remote(lambda: admin.get("/v1/stats"))
    print(json.dumps(data, indent=2) if raw else "\n".join(stats_lines(data, all_counters=all_counters)))
    return EXIT_OK

EXIT_UNHEALTHY: Final = 2  # `status`: the server answers but /healthz would fail (documented for monitoring)

def cmd_status(config_dir: Path, *, raw: bool = False, watch_s: float | None = None) -> int:
    from ntf_server.cli.screen import status_lines

    if watch_s is not None and not 0.2 <= watch_s <= 86400:
        raise CliError("--watch: 0.2 to 86400 seconds")
    with _admin(config_dir) as admin:
        if watch_s is not None:
            return _watch_status(admin, watch_s, raw)
        data = _remote(lambda: admin.get("/v1/status"))
    print(json.dumps(data, indent=2) if raw else "\n".join(status_lines(data)))
    return EXIT_OK if data["healthy"] else EXIT_UNHEALTHY

def _watch_status(admin: Any, every_s: float, raw: bool) -> int:
    """Redraw until Ctrl-C; a failed call is shown in place of the screen, and the next one is tried."""
    import time

    from ntf_server.cli.remote import RemoteError
    from ntf_server.cli.screen import status_lines

    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() and not raw else ""
    try:
        while True:
            try:
                data = admin.get("/v1/status")
                text = json.dumps(data) if raw else "\n".join(status_lines(data)) + "\n"
            except RemoteError as e:
                text = json.dumps({"error": str(e)}) if raw else f"ntf-server: {e}\n"
            print(clear + text, flush=True)
            time.sleep(every_s)
    except KeyboardInterrupt:
        return EXIT_OK

def cmd_policy(config_dir: Path, action: str, env: str | None, assignments: list[str]) -> int:
    from ntf_server.cli.tables import parse_assignments, policy_change, policy_lines

    with _admin(config_dir) as admin:
        current = _remote(lambda: admin.get("/v1/policy"))
        if action == "set":
            try:
                changes = parse_assignments(assignments)
            except ValueError as e:
                raise CliError(f"policy set: {e}") from e
            body = policy_change(current, changes, env)
            current = _remote(lambda: admin.put("/v1/policy", body), "policy not changed: ")
            print("Policy changed.")
    print("\n".join(policy_lines(current)))
    return EXIT_OK
