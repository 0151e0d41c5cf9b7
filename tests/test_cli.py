"""`ntf-server` init / start (refusals only; running is the server's tests) / check-config."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from ntf_server import cli
from ntf_server.config import load_config
from ntf_server.protocol.encoding import b64u_decode
from ntf_server.transport import certs


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys: pytest.CaptureFixture[str], config_dir: Path, *extra: str) -> str:
    code, out, err = run(capsys, "--config-dir", str(config_dir), "init", "--host", "localhost", *extra)
    assert code == 0, err
    return out


def test_init_creates_everything_with_private_keys_0600(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    out = init(capsys, config_dir, "--port", "8443")
    for name in ("ntf-server.toml", "ca.key", "ca.crt", "server.key", "server.crt", "fingerprint", "store.key"):
        assert (config_dir / name).is_file(), name
    for name in ("ca.key", "server.key", "store.key", "admin.token"):
        assert stat.S_IMODE((config_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700

    config = load_config(config_dir)  # loadable, including its secrets
    assert (config.server.host, config.server.port) == ("localhost", 8443)
    fp = (config_dir / "fingerprint").read_text().strip()
    assert f"Fingerprint: {fp}\n" in out
    assert f"Server address: ntf://{fp}@localhost:8443\n" in out
    ca_der = certs.read_ca_der(config_dir / "ca.crt")
    assert b64u_decode(fp) == certs.fingerprint(ca_der)
    assert isinstance(x509.load_der_x509_certificate(ca_der).public_key(), ed448.Ed448PublicKey)  # default


def test_init_default_port_443_is_omitted_and_ed25519_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = init(capsys, tmp_path / "cfg", "--sign-algorithm", "ed25519")
    assert "@localhost\n" in out
    leaf = x509.load_pem_x509_certificate((tmp_path / "cfg" / "server.crt").read_bytes())
    assert isinstance(leaf.public_key(), ed25519.Ed25519PublicKey)
    assert load_config(tmp_path / "cfg").server.port == 443


def test_init_twice_refuses_and_changes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir)
    before = {p.name: p.read_bytes() for p in config_dir.iterdir()}
    code, _, err = run(capsys, "--config-dir", str(config_dir), "init")
    assert code == 1
    assert "already initialised" in err and "refusing to overwrite" in err
    assert {p.name: p.read_bytes() for p in config_dir.iterdir()} == before


def test_init_rejects_bad_host_and_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--config-dir", str(tmp_path / "a"), "init", "--host", "bad host")
    assert code == 1 and "--host" in err
    code, _, err = run(capsys, "--config-dir", str(tmp_path / "b"), "init", "--port", "0")
    assert code == 1 and "--port" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_init_writes_the_container_settings_into_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """deploy/compose.yaml's init: an external Redis, a state volume, the admin API open to a scraper."""
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir, "--redis-url", "redis://redis:6379/0", "--state-dir", str(tmp_path / "state"),
         "--admin-bind", "0.0.0.0")
    text = (config_dir / "ntf-server.toml").read_text()
    assert 'url = "redis://redis:6379/0"' in text and 'bind = "0.0.0.0"' in text
    config = load_config(config_dir)
    assert config.redis_url() == "redis://redis:6379/0"
    assert config.server.state_dir == tmp_path / "state"
    assert config.admin.bind == "0.0.0.0" and config.server.bind == ""


def test_init_refuses_a_bad_redis_url_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "--config-dir", str(tmp_path / "a"), "init", "--redis-url", "redis:6379")
    assert code == 1 and "redis.url: must start with redis://" in err
    assert not (tmp_path / "a").exists()


def test_start_refuses_uninitialised(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "--config-dir", str(tmp_path / "none"), "start")
    assert code == 1
    assert "not initialised" in err and "ntf-server init" in err
    assert "Server address" not in out


def test_start_refuses_replaced_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    init(capsys, tmp_path / "cfg")
    init(capsys, tmp_path / "other")
    (tmp_path / "cfg" / "ca.crt").write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
    code, out, err = run(capsys, "--config-dir", str(tmp_path / "cfg"), "start")
    assert code == 1
    assert "does not match" in err
    assert "Server address" not in out


def test_start_refuses_missing_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    init(capsys, tmp_path / "cfg")
    toml = tmp_path / "cfg" / "ntf-server.toml"
    text = toml.read_text().replace("[apns.production]\n", "[apns.production]\nenabled = true\n"
                                    "key_id = 'KEY1234567'\nkey_file = 'AuthKey.p8'\n", 1)
    # drop the template's own lines for these keys in that section (TOML forbids repeating a key)
    head, _, tail = text.partition("[apns.development]")
    head = "\n".join(ln for ln in head.splitlines()
                     if ln not in ("enabled = false", 'key_id = ""', 'key_file = ""'))
    toml.write_text(head + "\n[apns.development]" + tail)
    code, _, err = run(capsys, "--config-dir", str(tmp_path / "cfg"), "start")
    assert code == 1 and "apns.production.key_file: cannot read" in err


def test_check_config_summary_has_no_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir, "--port", "8443")
    code, out, _ = run(capsys, "--config-dir", str(config_dir), "check-config")
    assert code == 0
    fp = (config_dir / "fingerprint").read_text().strip()
    assert f"Server address: ntf://{fp}@localhost:8443" in out
    assert "APNs production: disabled" in out
    assert re.search(r"^Workers: (1 \(one process, no supervisor\)|\d+, under a supervisor); auto = one per core$",
                     out, re.M), out
    assert f"Admin API: http://127.0.0.1:5227 (token from file {config_dir.resolve()}/admin.token" in out
    token = (config_dir / "admin.token").read_text().strip()
    assert token not in out


def test_check_config_names_unknown_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir)
    toml = config_dir / "ntf-server.toml"
    toml.write_text(toml.read_text().replace("idle_timeout_s", "idle_timeout"))
    code, out, err = run(capsys, "--config-dir", str(config_dir), "check-config")
    assert code == 1
    assert "unknown key 'server.idle_timeout'" in err
    assert out == ""


def test_check_config_env_secret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir)
    toml = config_dir / "ntf-server.toml"
    text = toml.read_text()
    dev = text.index("[apns.development]")
    section = text[dev:].replace("enabled = false", "enabled = true", 1)
    section = section.replace('key_env = ""', 'key_env = "NTF_TEST_P8"', 1).replace('key_id = ""', 'key_id = "K1"', 1)
    toml.write_text(text[:dev] + section)
    monkeypatch.delenv("NTF_TEST_P8", raising=False)
    code, _, err = run(capsys, "--config-dir", str(config_dir), "check-config")
    assert code == 1 and "NTF_TEST_P8" in err
    monkeypatch.setenv("NTF_TEST_P8", "-----BEGIN PRIVATE KEY-----\nsecretbytes\n")
    code, out, _ = run(capsys, "--config-dir", str(config_dir), "check-config")
    assert code == 0
    assert "APNs development: api.sandbox.push.apple.com:443" in out and "env $NTF_TEST_P8" in out
    assert "secretbytes" not in out


def test_config_dir_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.CONFIG_DIR_ENV, str(tmp_path / "envcfg"))
    code, _, err = run(capsys, "init")
    assert code == 0, err
    assert (tmp_path / "envcfg" / "ntf-server.toml").is_file()


def test_console_script_version_and_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ntf_server.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("ntf-server ")
    done = subprocess.run([sys.executable, "-m", "ntf_server.cli"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "init" in done.stdout


def test_config_dir_is_accepted_after_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    code, _, err = run(capsys, "init", "--config-dir", str(config_dir), "--host", "localhost")
    assert code == 0, err
    assert (config_dir / "ntf-server.toml").is_file()
    code, out, _ = run(capsys, "check-config", "-c", str(config_dir))
    assert code == 0 and "Config:" in out


@pytest.mark.parametrize("name", ["store.key", "server.key", "ca.key", "admin.token"])
@pytest.mark.parametrize("command", ["check-config", "start"])
def test_loose_private_file_is_refused_by_check_config_as_by_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, command: str
) -> None:
    """A systemd ExecStartPre=check-config must catch what start refuses (one line, exit 1)."""
    config_dir = tmp_path / "cfg"
    init(capsys, config_dir)
    (config_dir / name).chmod(0o644)
    code, out, err = run(capsys, "--config-dir", str(config_dir), command)
    assert code == 1
    assert err == f"ntf-server: {config_dir / name} is readable by other users (mode 0644): " \
                  f"run `chmod 600 {config_dir / name}`\n"
    assert "Server address" not in out


def test_help_speaks_to_users(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["init", "--help"], ["start", "--help"], ["check-config", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "§" not in out and "DESIGN" not in out and "``" not in out, argv
