"""``init`` (a new configuration directory: settings, certificates, store key, admin token) and
``config-reference`` (the configuration reference, printed or written into README)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ntf_server.cli.common import ADMIN_TOKEN_FILE, EXIT_OK, STORE_KEY_FILE, CliError
from ntf_server.config import CONFIG_FILE, ConfigError, parse_config, render_default_config
from ntf_server.protocol.encoding import CodecError, check_host
from ntf_server.transport import certs
from ntf_server.transport.certs import SignAlgorithm


def cmd_config_reference(readme: Path | None) -> int:
    from ntf_server.config import reference as configdoc

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
