"""What several commands share: the config directory's defaults, errors and exit statuses, and loading
and checking an initialised config directory (``start``, ``check-config``, ``import-simplex``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from ntf_server.config import CONFIG_FILE, Config, load_config
from ntf_server.transport import certs

CONFIG_DIR_ENV: Final = "NTF_SERVER_CFG_PATH"  # same variable as the Haskell server
DEFAULT_CONFIG_DIR: Final = "ntf-config"
ADMIN_TOKEN_FILE: Final = "admin.token"  # noqa: S105  (a file name, not a secret)
STORE_KEY_FILE: Final = "store.key"
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2


class CliError(Exception):
    """A user-facing failure: printed as ``ntf-server: <message>``, exit status 1."""

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
