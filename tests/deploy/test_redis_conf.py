"""deploy/redis.conf is accepted by a real server (the bundled Valkey, and Debian's redis-server when
installed) and gives what ntf-server needs: AOF on, no eviction, and no start-up advice from the store; and
what it must not give (issue 16.8): loopback and protected mode, and a user confined to the key prefix
and to harmless commands."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ntf_server.store.embedded import find_server_binary
from ntf_server.store.redis import RedisStore

CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"
BINARIES = [pytest.param(None, id="bundled"),
            pytest.param("/usr/bin/redis-server", id="debian-redis",
                         marks=pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(),
                                                  reason="Debian redis-server not installed"))]


CHECKER = "conf-checker"  # a user of the test only, to read the settings


@pytest.fixture(params=BINARIES)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The server started with the file as is, only port, socket and dir overridden for a test, plus a user
    of the test's own (with a password) to read the settings, as the file tells an operator to add one."""
    binary = find_server_binary(request.param)
    sock = tmp_path / "r.sock"
    with (tmp_path / "stderr").open("wb") as stderr:
        proc = subprocess.Popen([binary, str(CONF), "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp_path),
                                 "--daemonize", "no", "--logfile", str(tmp_path / "log"),
                                 "--user", CHECKER, "on", f">{CHECKER}", "~*", "+@all"],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        client = redis.Redis(unix_socket_path=str(sock))
        for _ in range(100):
            if proc.poll() is not None:
                log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
                pytest.fail(f"{binary} refused deploy/redis.conf: {(tmp_path / 'stderr').read_text()}{log}")
            try:
                if sock.exists() and client.ping():
                    break
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        client.close()
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_conf_gives_aof_and_no_eviction(server: Path) -> None:
    client = redis.Redis(unix_socket_path=str(server), username=CHECKER, password=CHECKER, decode_responses=True)
    try:
        for key, want in {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction",
                          "hash-max-listpack-value": "256", "protected-mode": "yes",
                          "bind": "127.0.0.1 -::1"}.items():
            assert client.config_get(key) == {key: want}
    finally:
        client.close()


def test_the_server_user_is_confined_to_its_keys_and_harmless_commands(server: Path) -> None:
    ntf = redis.Redis(unix_socket_path=str(server))  # the default user, as ntf-server connects
    try:
        ntf.set("ntf:x", 1)
        for denied in (lambda: ntf.set("other:x", 1), lambda: ntf.get("other:x"), ntf.flushall,
                       lambda: ntf.keys("*"), lambda: ntf.config_set("appendonly", "no"),
                       lambda: ntf.eval("return redis.call('GET', 'other:x')", 0)):
            with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)no permissions|can.t access"):  # scripts too
                denied()
        assert ntf.get("ntf:x") == b"1"
    finally:
        ntf.close()


async def test_the_store_works_within_the_limits_and_has_no_advice_for_it(server: Path) -> None:
    store = await RedisStore.connect(f"unix://{server}", secrets.token_bytes(32), prefix="ntf:")
    try:
        assert await store.config_advice() == []
        assert (await store.counts()).tokens == 0  # reads, and the scripts run at connect, are allowed
    finally:
        await store.close()
