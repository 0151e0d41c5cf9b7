"""ntf-server.toml: defaults, template round trip, validation errors naming the key, secrets."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ntf_server.config import (
    Config,
    ConfigError,
    LogFormat,
    Overflow,
    RedisConfig,
    SocksMode,
    load_config,
    parse_config,
    redact_url,
    render_default_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ntf-server.toml"
    path.write_text(text)
    return path


def leaf_keys(section: object, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        if f.name == "config_dir":
            continue
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            keys += leaf_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_template_loads_to_exactly_the_defaults(tmp_path: Path) -> None:
    from_template = load_config(write(tmp_path, render_default_config()), secrets=False)
    assert from_template == parse_config({}, tmp_path.resolve())
    assert from_template.server.port == 443
    assert from_template.apns.production.host == "api.push.apple.com"
    assert from_template.apns.development.host == "api.sandbox.push.apple.com"
    assert from_template.apns.test.host == "localhost"
    assert from_template.apns.production.team_id == "5NN7GUYB6T"
    assert from_template.apns.production.topic == "chat.simplex.app"
    assert (from_template.push.hidden_per_hour, from_template.push.burst) == (3, 3)
    assert from_template.push.overflow is Overflow.ALERT
    assert from_template.admin.bind == "127.0.0.1"


def test_template_shows_every_setting_uncommented(tmp_path: Path) -> None:
    text = render_default_config()
    data = tomllib.loads(text)
    for dotted in leaf_keys(parse_config({}, tmp_path)):
        node: Any = data
        for part in dotted.split("."):
            assert part in node, f"{dotted} missing from the template"
            node = node[part]
    assert text.count("\n# ") >= len(leaf_keys(parse_config({}, tmp_path)))  # every setting is commented


def test_template_with_host_and_port(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, render_default_config(host="ntf.example.com", port=8443)), secrets=False)
    expected = parse_config({"server": {"host": "ntf.example.com", "port": 8443}}, tmp_path.resolve())
    assert loaded == expected


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[tls]\ncert_file = "certs/leaf.crt"\n[store]\nkey_file = "/k"\n'), secrets=False
    )
    assert config.config_dir == tmp_path.resolve()
    assert config.tls.cert_file == tmp_path.resolve() / "certs" / "leaf.crt"
    assert config.tls.ca_cert_file == tmp_path.resolve() / "ca.crt"
    assert config.store.key_file == Path("/k")
    assert config.server.state_dir == tmp_path.resolve() / "state"


def test_config_is_immutable(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), ("127.0.0.1:9050", ("127.0.0.1", 9050)), ("[::1]:9050", ("::1", 9050)),
     ("tor.internal:9150", ("tor.internal", 9150))],
)
def test_socks_proxy_forms(tmp_path: Path, text: str, expected: tuple[str, int] | None) -> None:
    config = parse_config({"subscriber": {"socks_proxy": text, "socks_mode": "always"}}, tmp_path)
    assert config.subscriber.proxy() == expected
    assert config.subscriber.socks_mode is SocksMode.ALWAYS
    assert parse_config({}, tmp_path).subscriber.socks_mode is SocksMode.ONION


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[servre]\n", "unknown key 'servre'"),
        ("[apns.production]\nkeyfile = 'x'\n", "unknown key 'apns.production.keyfile'"),
        ("[apns.staging]\n", "unknown key 'apns.staging'"),
        ("[server]\nport = '443'\n", "server.port: expected an integer"),
        ("[server]\nport = 70000\n", "server.port: must be <= 65535"),
        ("[server]\nport = true\n", "server.port: expected an integer"),
        ("[server]\nidle_timeout_s = -1\n", "server.idle_timeout_s: must be >= 0"),
        ("[server]\nhost = 'bad host!'\n", "server.host:"),
        ("[push]\noverflow = 'queue'\n", "push.overflow: expected one of alert, defer, drop"),
        ("[push]\nburst = 0\n", "push.burst: must be >= 1"),
        ("[log]\nformat = 1\n", "log.format: expected a string"),
        ("server = 1\n", "server: expected a [server] table"),
        ("[redis]\nurl = 'http://x'\n", "redis.url: must start with"),
        (
            "[apns.development]\nenabled = true\nkey_id = 'ABC'\n",
            "apns.development.key_file or apns.development.key_env",
        ),
        ("[apns.test]\nenabled = true\nkey_env = 'X'\n", "apns.test.key_id: required"),
        ("[admin]\ntoken_file = ''\n", "admin.token_file or admin.token_env: required when admin.enabled"),
        ("[admin]\ncensus_interval_s = 1\n", "admin.census_interval_s: must be >= 10"),
        ("[subscriber]\nown_server_domains = 'example.org'\n", "subscriber.own_server_domains: expected a list"),
        ("[subscriber]\nown_server_domains = [1]\n", "subscriber.own_server_domains[0]: expected a string"),
        ("[subscriber]\nown_server_domains = ['bad host!']\n", "subscriber.own_server_domains: 'bad host!'"),
        ("[subscriber]\nsocks_proxy = 'localhost'\n", "subscriber.socks_proxy: expected host:port"),
        ("[subscriber]\nsocks_proxy = 'localhost:0'\n", "subscriber.socks_proxy: expected host:port"),
        ("[subscriber]\nsocks_proxy = '::1:9050'\n", "subscriber.socks_proxy: write an IPv6 address in brackets"),
        ("[subscriber]\nsocks_proxy = 'bad host!:9050'\n", "subscriber.socks_proxy: invalid transport host"),
        ("[subscriber]\nsocks_mode = 'tor'\n", "subscriber.socks_mode: expected one of onion, always"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, toml), secrets=False)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[server\n"), secrets=False)
    with pytest.raises(ConfigError, match="ntf-server init"):
        load_config(tmp_path / "missing" / "ntf-server.toml")


def test_load_accepts_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "[log]\nformat = 'json'\n")
    assert load_config(tmp_path, secrets=False).log.format is LogFormat.JSON


def test_secret_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text("t")
    toml = "[apns.production]\nenabled = true\nkey_env = 'NTF_TEST_APNS_KEY'\nkey_id = 'KEY1234567'\n"
    monkeypatch.delenv("NTF_TEST_APNS_KEY", raising=False)
    with pytest.raises(ConfigError, match=re.escape("apns.production.key_env: environment variable NTF_TEST_APNS_KEY")):
        load_config(write(tmp_path, toml))
    monkeypatch.setenv("NTF_TEST_APNS_KEY", "-----BEGIN PRIVATE KEY-----\nabc\n")
    config = load_config(write(tmp_path, toml))
    key = config.apns.production.key("apns.production")
    assert key.read().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "abc" not in repr(config) and "BEGIN" not in repr(config)


def test_secret_from_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text("t")  # the admin API is on by default and needs its token
    toml = "[apns.production]\nenabled = true\nkey_id = 'KEY1234567'\nkey_file = 'secret/AuthKey.p8'\n"
    with pytest.raises(ConfigError, match=r"apns.production.key_file: cannot read .*secret/AuthKey.p8"):
        load_config(write(tmp_path, toml))
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "AuthKey.p8").write_text("file-key")
    key = load_config(write(tmp_path, toml)).apns.production.key("apns.production")
    assert key.read() == b"file-key"
    monkeypatch.setenv("NTF_TEST_APNS_KEY", "env-key")
    config = load_config(write(tmp_path, toml + "key_env = 'NTF_TEST_APNS_KEY'\n"))
    assert config.apns.production.key("apns.production").read() == b"env-key"


def test_redis_url_password_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text("t")
    config = load_config(write(tmp_path, "[redis]\nurl = 'redis://u:hunter2@db:6379/0'\n"))
    assert config.redis_url() == "redis://u:hunter2@db:6379/0"
    assert "hunter2" not in repr(config)
    monkeypatch.setenv("NTF_TEST_REDIS", "rediss://:pw@db")
    config = load_config(write(tmp_path, "[redis]\nurl_env = 'NTF_TEST_REDIS'\n"))
    assert config.redis_url() == "rediss://:pw@db"
    with pytest.raises(ConfigError, match=r"redis.url and redis.url_env"):
        load_config(write(tmp_path, "[redis]\nurl = 'redis://x'\nurl_env = 'NTF_TEST_REDIS'\n"))


def test_every_section_is_a_frozen_dataclass(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path)
    assert isinstance(config, Config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            first = dataclasses.fields(value)[0].name
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(value, first, None)


def test_deploy_example_is_the_template_with_a_host_and_state_dir(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "ntf-server.example.toml"
    loaded = load_config(write(tmp_path, example.read_text()), secrets=False)
    expected = {"server": {"host": "ntf.example.com", "state_dir": "/var/lib/ntf-server"}}
    assert loaded == parse_config(expected, tmp_path.resolve())


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:pw@db.example:6380/2", "redis://***@db.example:6380/2"),
    ("redis://:pw@db.example", "redis://***@db.example"),
    ("redis://db.example:6379/0?password=hunter2", "redis://db.example:6379/0"),
    ("rediss://db.example/1?username=u&password=hunter2#frag", "rediss://db.example/1"),
    ("unix:///run/redis/redis.sock?password=hunter2&db=1", "unix:///run/redis/redis.sock"),
    ("redis://[::1]:6379", "redis://[::1]:6379"),
    ("redis://db.example:99999?password=hunter2", "redis://<unparseable>"),
])
def test_redact_url_shows_host_port_and_path_only(url: str, shown: str) -> None:
    """Issue 16.7: a `?password=` URL was printed whole."""
    assert redact_url(url) == shown
    assert "hunter2" not in repr(RedisConfig(url=url))


def test_redis_cluster_needs_a_node_url_and_a_prefix_without_braces(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("t")
    assert load_config(write(tmp_path, "[redis]\nurl = 'redis://n1:7000'\ncluster = true\n")).redis.cluster
    for bad, why in [("cluster = true\n", "needs url"),
                     ("url = 'unix:///run/r.sock'\ncluster = true\n", "redis:// or rediss://"),
                     ("url = 'redis://n1:7000'\ncluster = true\nkey_prefix = '{x}:'\n", "no braces")]:
        with pytest.raises(ConfigError, match=why):
            load_config(write(tmp_path, "[redis]\n" + bad))
