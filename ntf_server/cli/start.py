"""``start`` (one process, or the supervisor and its workers: ``[server] workers``) and ``check-config``
(every check ``start`` runs, and a summary of what the server will do)."""

from __future__ import annotations

from pathlib import Path

from ntf_server.cli.common import EXIT_OK, load_initialised
from ntf_server.config import Config
from ntf_server.observability import startsummary
from ntf_server.supervisor.processes import use_system_malloc
from ntf_server.transport import certs


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

def cmd_check_config(config_dir: Path) -> int:
    config, key_hash = load_initialised(config_dir)
    for line in summary(config, key_hash):
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
        f"Workers: {_workers(s.workers, s.worker_count())}",
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


def _workers(setting: str, count: int) -> str:
    text = "1 (one process, no supervisor)" if count == 1 else f"{count}, under a supervisor"
    return f"{text}; {setting} = one per core" if setting == "auto" else text
