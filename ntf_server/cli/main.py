"""The command line: every command's options (``build_parser``) and the dispatch (``main``).

The config directory is ``--config-dir``, else ``$NTF_SERVER_CFG_PATH``, else ``./ntf-config`` (relative,
so the Quick start needs no root; packages pass an absolute path).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from ntf_server import __version__
from ntf_server.cli.admin_client import cmd_policy, cmd_stats, cmd_status
from ntf_server.cli.common import CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR, EXIT_ERROR, EXIT_USAGE, CliError
from ntf_server.cli.demo import cmd_demo
from ntf_server.cli.importing import IMPORT_DATABASE, IMPORT_SCHEMA, cmd_import_simplex, cmd_move_store
from ntf_server.cli.init import cmd_config_reference, cmd_init
from ntf_server.cli.start import cmd_check_config, cmd_start
from ntf_server.config import ConfigError
from ntf_server.transport.certs import CredentialsError, SignAlgorithm

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
    move = sub.add_parser(
        "move-store", help="copy this server's data set into another Redis, Valkey or Cluster (e.g. sharded)",
        description="Copy every token with its subscriptions and last notifications, the push policy and the SMP "
        "service credentials of this configuration's data set into another one: another Redis or Cluster, "
        "key prefix or shard count (README \"Cluster mode\"). Old subscription ids stay valid as aliases. Stop "
        "this server first; then point [redis] at the target and start it. The source is only read; running "
        "it again finishes an interrupted copy.",
    )
    move.add_argument("--to-url", required=True, metavar="URL", help="redis://, rediss:// or unix:// of the target "
                      "(in a cluster: any node)")
    move.add_argument("--to-prefix", metavar="PREFIX", help="key prefix in the target (default: this config's)")
    move.add_argument("--to-cluster", action="store_true", help="the target is a Redis/Valkey Cluster")
    move.add_argument("--to-shards", type=int, default=1, metavar="N",
                      help="shards of the target data set (default 1; README \"Cluster mode\")")
    # the option is accepted on either side of the command
    for p in (init, start, check, stats, status, policy, imp, move):
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
        if args.command == "move-store":
            return cmd_move_store(config_dir, args.to_url, args.to_prefix, args.to_cluster, args.to_shards)
        return cmd_check_config(config_dir)
    except (CliError, ConfigError, CredentialsError) as e:
        print(f"ntf-server: {e}", file=sys.stderr)
        return EXIT_ERROR
