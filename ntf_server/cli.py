"""Command-line entry point ``ntf-server`` (§6.7, README "Operating it").

``init`` creates a configuration directory (commented ``ntf-server.toml`` with every default, CA and
online certificates, store key, admin token), ``start`` checks it and runs the server, ``check-config``
validates it. ``stats``, ``status`` and ``policy`` talk to the running server's admin API (admin/remote.py).
The config directory is ``--config-dir``, else ``$NTF_SERVER_CFG_PATH``, else
``./ntf-config`` (relative, so the Quick start needs no root; packages pass an absolute path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from ntf_server import __version__, startsummary
from ntf_server.config import (
    CONFIG_FILE,
    Config,
    ConfigError,
    load_config,
    parse_config,
    render_default_config,
)
from ntf_server.protocol.encoding import CodecError, check_host
from ntf_server.supervisor.processes import use_system_malloc
from ntf_server.transport import certs
from ntf_server.transport.certs import CredentialsError, SignAlgorithm

CONFIG_DIR_ENV: Final = "NTF_SERVER_CFG_PATH"  # same variable as the Haskell server
DEFAULT_CONFIG_DIR: Final = "ntf-config"
ADMIN_TOKEN_FILE: Final = "admin.token"  # noqa: S105  (a file name, not a secret)
STORE_KEY_FILE: Final = "store.key"
IMPORT_DATABASE: Final = "postgresql://ntf@/ntf_server_store"  # the Haskell server's defaults (§6.1)
IMPORT_SCHEMA: Final = "ntf_server"
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
T = TypeVar("T")


class CliError(Exception):
    """A user-facing failure: printed as ``ntf-server: <message>``, exit status 1."""


DESCRIPTION: Final = """\
ntf-server: a self-hosted push-notification server for SimpleX-compatible messengers. iOS apps register
their APNs device tokens and notification subscriptions with it; it holds the subscriptions open on the
messaging (SMP) servers and turns each message notice into an end-to-end encrypted push through Apple's
push service: hidden within a per-device budget, then as the push policy says."""

EPILOG: Final = """\
typical use:
  ntf-server init --host push.example.com   create ./ntf-config (keys, certificates, settings)
  ntf-server check-config                   check the settings and show what the server will do
  ntf-server start                          run the server (Ctrl-C or SIGTERM stops it)
  ntf-server stats                          what the running server is doing (admin API)
  ntf-server status                         one screen for the operator; exit 2 when unhealthy
  ntf-server policy set overflow=defer      change the push policy live (admin API)
  ntf-server demo                           see it work: everything local, nothing to prepare

The configuration directory is --config-dir, else $NTF_SERVER_CFG_PATH, else ./ntf-config.
Settings live in ntf-server.toml in that directory; every key is listed there with its default."""


def _config_dir_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c", "--config-dir", type=Path, default=default, metavar="DIR",
        help=f"configuration directory (default: ${CONFIG_DIR_ENV} or ./{DEFAULT_CONFIG_DIR})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ntf-server", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ntf-server {__version__}")
    _config_dir_option(parser, Path(os.environ.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    init = sub.add_parser(
        "init", help="create the configuration directory: keys, certificates and settings",
        description="Create the configuration directory with a new server identity (CA and server "
        "certificates), the key that encrypts stored data, and ntf-server.toml with every setting at its "
        "default. Prints the server address apps are configured with. Never overwrites an existing one.",
    )
    init.add_argument("--host", default="127.0.0.1",
                      help="host name or IP address apps connect to (default 127.0.0.1)")
    init.add_argument("--port", type=int, default=443, help="port to listen on (default 443, needs root)")
    # keys a container or package sets at init instead of editing the file afterwards (deploy/README.md)
    init.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="server.state_dir: data directory (default: state/ in the config directory)")
    init.add_argument("--redis-url", metavar="URL",
                      help="redis.url: an external Redis, redis://host:6379/0 (default: embedded Redis)")
    init.add_argument("--admin-bind", metavar="ADDRESS",
                      help="admin.bind: admin API address (default 127.0.0.1; 0.0.0.0 for a scraper in another "
                      "container)")
    init.add_argument(
        "-a", "--sign-algorithm", type=SignAlgorithm, choices=list(SignAlgorithm), default=SignAlgorithm.ED448,
        help="certificate key type (default ed448)",
    )
    start = sub.add_parser("start", help="check the configuration and run the server",
                           description="Check the configuration and run the server until Ctrl-C or SIGTERM.")
    check = sub.add_parser("check-config", help="check the configuration and show what the server will do",
                           description="Run every check `start` runs (settings, key files and their "
                           "permissions, certificates) and print a summary, without starting anything.")
    ref = sub.add_parser("config-reference", help="print the configuration reference (Markdown)",
                         description="Print every configuration key with its default, allowed values and "
                         "meaning, generated from the code (README's reference is this output).")
    ref.add_argument("--update", type=Path, metavar="README",
                     help="rewrite the generated part of this file instead of printing")
    stats = sub.add_parser("stats", help="counters and figures of the running server (admin API)",
                           description="Ask the running server's admin API for its counters and figures and "
                           "print them as tables.")
    stats.add_argument("--all", action="store_true", help="list every counter, also those still at 0")
    stats.add_argument("--json", action="store_true", help="print the admin API's JSON as is")
    status = sub.add_parser(
        "status", help="one screen: health, uptime, store, SMP servers, pushes, policy (admin API)",
        description="Ask the running server's admin API (GET /v1/status) and print one screen: version and "
        "uptime, client connections, tokens and subscriptions by status, SMP servers up and down, pushes in "
        "the last hour and since start by kind, and the push policy.",
        epilog="exit status: 0 healthy; 1 the admin API cannot be used (server not running, wrong token, "
        "bad config); 2 the server answers but is unhealthy (NTF listener not running or Redis not answering)",
    )
    status.add_argument("--json", action="store_true", help="print the admin API's JSON as is (with --watch: "
                        "one JSON object a line)")
    status.add_argument("--watch", type=float, metavar="N", help="redraw every N seconds until Ctrl-C")
    policy = sub.add_parser(
        "policy", help="show or change the push policy of the running server (admin API)",
        description="Show or change the push policy (hidden pushes per device token per hour, burst, and what "
        "happens over budget: alert, defer or drop) through the running server's admin API. A change is "
        "stored in Redis and used by the next push on every instance, without a restart.",
        epilog="examples:\n  ntf-server policy show\n  ntf-server policy set overflow=defer hidden_per_hour=2\n"
        "  ntf-server policy set --env test burst=1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("show", help="print the policy in force")
    pset = actions.add_parser("set", help="change settings: key=value ... (hidden_per_hour, burst, overflow)")
    pset.add_argument("--env", choices=["production", "development", "test"],
                      help="change the override of one APNs environment instead of the default")
    pset.add_argument("assignments", nargs="+", metavar="key=value")
    imp = sub.add_parser(
        "import-simplex", help="import the users of a Haskell ntf-server from its PostgreSQL database",
        description="Copy the tokens, SMP servers, subscriptions and last notifications of a Haskell "
        "ntf-server (simplexmq, PostgreSQL store) into this server's store, keeping their ids, so apps "
        "carry on without registering again. Stop this server first; start it afterwards and it "
        "resubscribes the imported subscriptions. Safe to run again: what is already there is left as it is.",
    )
    imp.add_argument("-d", "--database", default=IMPORT_DATABASE, metavar="URL",
                     help=f"PostgreSQL connection of the Haskell server (default {IMPORT_DATABASE}, as Haskell)")
    imp.add_argument("--schema", default=IMPORT_SCHEMA, help=f"its schema (default {IMPORT_SCHEMA})")
    imp.add_argument("--dry-run", action="store_true",
                     help="read and check everything, print the counts, write nothing")
    for p in (init, start, check, stats, status, policy, imp):  # the option is accepted on either side of the command
        _config_dir_option(p, argparse.SUPPRESS)
    demo = sub.add_parser(
        "demo", help="run everything locally and show what happens to each push",
        description="Start, in one process and a temporary directory: an embedded Redis, a strict local APNs "
        "simulator, two local SMP servers, the server and a simulated phone. The phone registers and verifies "
        "its token, subscribes queues on both SMP servers, and receives a burst of messages; every push is "
        "shown as APNs receives it (hidden or alert) and as the phone decrypts it, then a summary. Needs no "
        "configuration; everything is removed at the end.",
    )
    demo.add_argument("--messages", type=int, default=8, metavar="N",
                      help="messages in the first burst (default 8; the hidden budget is 3)")
    demo.add_argument("--more", type=int, default=4, metavar="N",
                      help="messages after the policy change (default 4)")
    demo.add_argument("--keep-running", action="store_true",
                      help="after the summary, keep everything up (prints the server and admin addresses) "
                      "until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    config_dir: Path = args.config_dir
    try:
        if args.command == "init":
            return cmd_init(config_dir, args.host, args.port, args.sign_algorithm, state_dir=args.state_dir,
                            redis_url=args.redis_url, admin_bind=args.admin_bind)
        if args.command == "start":
            return cmd_start(config_dir)
        if args.command == "config-reference":
            return cmd_config_reference(args.update)
        if args.command == "demo":
            return cmd_demo(args.messages, args.more, args.keep_running)
        if args.command == "stats":
            return cmd_stats(config_dir, all_counters=args.all, raw=args.json)
        if args.command == "status":
            return cmd_status(config_dir, raw=args.json, watch_s=args.watch)
        if args.command == "policy":
            return cmd_policy(config_dir, args.action, getattr(args, "env", None), getattr(args, "assignments", []))
        if args.command == "import-simplex":
            return cmd_import_simplex(config_dir, args.database, args.schema, args.dry_run)
        return cmd_check_config(config_dir)
    except (CliError, ConfigError, CredentialsError) as e:
        print(f"ntf-server: {e}", file=sys.stderr)
        return EXIT_ERROR


# ---------------------------------------------------------------- init


def cmd_config_reference(readme: Path | None) -> int:
    from ntf_server import configdoc

    if readme is None:
        print(configdoc.render_reference(), end="")
        return EXIT_OK
    try:
        changed = configdoc.update(readme)
    except (OSError, ValueError) as e:
        raise CliError(str(e)) from e
    print(f"{readme}: configuration reference {'updated' if changed else 'already up to date'}")
    return EXIT_OK


def cmd_init(config_dir: Path, host: str, port: int, algorithm: SignAlgorithm, *, state_dir: Path | None = None,
             redis_url: str | None = None, admin_bind: str | None = None) -> int:
    try:
        check_host(host)
    except CodecError as e:
        raise CliError(f"--host: {e}") from e
    if not 1 <= port <= 65535:
        raise CliError(f"--port: must be 1..65535, got {port}")
    text = render_default_config(host=host, port=port, state_dir=state_dir, redis_url=redis_url,
                                 admin_bind=admin_bind)
    try:  # a bad --redis-url is refused before anything is written
        parse_config(tomllib.loads(text), config_dir)
    except ConfigError as e:
        raise CliError(str(e)) from e
    existing = [n for n in (CONFIG_FILE, *certs.CREDENTIAL_FILES) if (config_dir / n).exists()]
    if existing:
        raise CliError(
            f"{config_dir} is already initialised ({', '.join(existing)} exist); refusing to overwrite. "
            "Use another --config-dir or remove the old one yourself."
        )
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = certs.create_credentials(config_dir, host, algorithm)
    create_store_key(config_dir / STORE_KEY_FILE)
    certs.write_private_file(config_dir / ADMIN_TOKEN_FILE, (certs.random_token() + "\n").encode())
    # The config file goes last: its presence is what `start` takes as "initialised".
    certs.write_public_file(config_dir / CONFIG_FILE, text.encode())
    print(f"Initialised {config_dir.resolve()} ({algorithm.value} certificates)")
    print("Keep ca.key offline after init: it is only needed to issue a new server certificate.")
    print(f"Fingerprint: {made.fingerprint_b64u}")
    print(f"Server address: {certs.server_address(made.key_hash, host, port)}")
    return EXIT_OK


def create_store_key(path: Path) -> None:
    """The at-rest key, in the store's own format (``ntf_server.store.atrest``)."""
    from ntf_server.store.atrest import load_or_create_store_key

    load_or_create_store_key(path)


# ---------------------------------------------------------------- start / check-config


def load_initialised(config_dir: Path) -> tuple[Config, bytes]:
    """Load and check everything ``start`` needs; returns the config and the server key hash."""
    if not (config_dir / CONFIG_FILE).is_file():
        raise CliError(f"{config_dir} is not initialised (no {CONFIG_FILE}): run `ntf-server init` first")
    config = load_config(config_dir)
    for path in (config.tls.cert_file, config.tls.key_file, config.tls.ca_cert_file):
        if not path.is_file():
            raise CliError(f"missing {path}: run `ntf-server init` or fix the [tls] section")
    check_private_files(config)
    key_hash = certs.check_stored_fingerprint(config.tls.ca_cert_file, config.tls.fingerprint_file)
    return config, key_hash


def private_files(config: Config) -> list[Path]:
    """Every private key or token file the configuration names (or init wrote) that exists."""
    candidates: list[Path | None] = [
        config.store.key_file, config.tls.key_file, config.config_dir / certs.CA_KEY_FILE, config.admin.token_file,
    ]
    candidates += [env.key_file for _, env in config.apns_environments() if env.enabled]
    return [p for p in candidates if p is not None and p.exists()]


def check_private_files(config: Config) -> None:
    """Refuse private files readable by group or others: the same rule for ``start`` and ``check-config``
    (so a systemd ``ExecStartPre=check-config`` catches what ``start`` would refuse)."""
    for path in private_files(config):
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise CliError(f"{path} is readable by other users (mode {mode:04o}): run `chmod 600 {path}`")


def cmd_start(config_dir: Path) -> int:
    config, _ = load_initialised(config_dir)
    use_system_malloc()  # re-executes once: freed memory returns to the system (workers inherit it)
    workers = config.server.worker_count()
    # Imported here: only the CLI imports the server (ntf_server/README.md's import rule), and init/check-config
    # must not pay for (or depend on) the whole server stack.
    if workers == 1:  # one process, no supervisor
        from ntf_server.server import run

        return run(config)
    from ntf_server.supervisor.supervisor import run as supervise

    return supervise(config, workers)


def cmd_demo(messages: int, more: int, keep_running: bool) -> int:
    if not (1 <= messages <= 100 and 0 <= more <= 100):
        raise CliError("--messages: 1..100, --more: 0..100")
    from ntf_server.demo.cli import run  # like `start`: only the command that needs the server imports it

    return run(messages, more, keep_running)


def cmd_check_config(config_dir: Path) -> int:
    config, key_hash = load_initialised(config_dir)
    for line in summary(config, key_hash):
        print(line)
    return EXIT_OK


def cmd_import_simplex(config_dir: Path, database: str, schema: str, dry_run: bool) -> int:
    config, _ = load_initialised(config_dir)
    import asyncio

    from ntf_server.importer.command import ImportFailed, import_simplex
    from ntf_server.importer.reader import SourceError
    from ntf_server.importer.writer import report
    from ntf_server.logsetup import scoped_logging
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


def summary(config: Config, key_hash: bytes) -> list[str]:
    """What the server will do, without secrets (only where they come from)."""
    s = config.server
    idle = f"{s.idle_timeout_s:g} s" if s.idle_timeout_s else "none"
    lines = [
        f"Config: {config.config_file} OK",
        f"Server address: {certs.server_address(key_hash, s.host, s.port)}",
        f"Listen: {s.bind or '*'}:{s.port}, max {s.max_connections} connections ({s.max_handshakes} in handshake, "
        f"{s.max_connections_per_ip} per address), idle timeout {idle}",
        f"Redis: {startsummary.redis_mode(config)}, key prefix {config.redis.key_prefix!r}",
        f"SMP via SOCKS: {startsummary.socks(config)}",
    ]
    for name, env in config.apns_environments():
        if env.enabled:
            key = env.key(f"apns.{name}").describe()
            lines.append(f"APNs {name}: {env.host}:{env.port} topic {env.topic}, key {env.key_id} from {key}")
        else:
            lines.append(f"APNs {name}: disabled")
    a = config.admin
    if a.enabled:
        scrape = "without" if a.metrics_public else "with"
        own = ", ".join(config.subscriber.own_server_domains) or "none listed"
        lines.append(f"Admin API: {startsummary.admin_url(config)} (token from {a.token().describe()}; /metrics "
                     f"{scrape} it), own SMP servers: {own}")
    else:
        lines.append("Admin API: disabled")
    lines.append(f"Log: {config.log.level.value}, {config.log.format.value}")
    return lines


# ---------------------------------------------------------------- stats / policy (admin API)


def _admin(config_dir: Path) -> Any:
    from ntf_server.admin.remote import AdminClient, RemoteError

    if not (config_dir / CONFIG_FILE).is_file():
        raise CliError(f"{config_dir} is not initialised (no {CONFIG_FILE}): use the server's --config-dir")
    try:
        return AdminClient(load_config(config_dir, secrets=False))
    except RemoteError as e:
        raise CliError(str(e)) from e


def _remote(call: Callable[[], T], context: str = "") -> T:
    from ntf_server.admin.remote import RemoteError

    try:
        return call()
    except RemoteError as e:
        raise CliError(f"{context}{e}") from e


def cmd_stats(config_dir: Path, *, all_counters: bool = False, raw: bool = False) -> int:
    from ntf_server.admin.tables import stats_lines

    with _admin(config_dir) as admin:
        data = _remote(lambda: admin.get("/v1/stats"))
    print(json.dumps(data, indent=2) if raw else "\n".join(stats_lines(data, all_counters=all_counters)))
    return EXIT_OK


EXIT_UNHEALTHY: Final = 2  # `status`: the server answers but /healthz would fail (documented for monitoring)


def cmd_status(config_dir: Path, *, raw: bool = False, watch_s: float | None = None) -> int:
    from ntf_server.admin.screen import status_lines

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

    from ntf_server.admin.remote import RemoteError
    from ntf_server.admin.screen import status_lines

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
    from ntf_server.admin.tables import parse_assignments, policy_change, policy_lines

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


if __name__ == "__main__":
    sys.exit(main())
