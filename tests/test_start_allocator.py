"""`ntf-server start` runs the server on the system allocator (issue 8.3): memory freed after a connection
flood can then go back to the system (figures: tests/bench/conn_memory.py)."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ntf_server import cli

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def local_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    assert cli.main(["--config-dir", str(cfg), "init", "--host", "localhost"]) == 0
    toml = cfg / "ntf-server.toml"
    text = toml.read_text().replace("port = 443\n", "port = 0\n", 1).replace('bind = ""', 'bind = "127.0.0.1"', 1)
    toml.write_text(text.replace("enabled = true", "enabled = false"))  # the admin API: no fixed port
    return cfg


def started_environ(cfg: Path, allocator: str | None) -> bytes:
    """Start the server as `ntf-server start` does, wait until it listens, return its environment."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    if allocator is not None:
        env["PYTHONMALLOC"] = allocator
    with subprocess.Popen([sys.executable, "-m", "ntf_server.cli", "--config-dir", str(cfg), "start"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Listening on port"):
                    break
            else:
                pytest.fail("the server did not start")
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            return environ
        finally:
            if proc.poll() is None:
                proc.kill()


def test_start_runs_the_server_with_the_system_allocator(tmp_path: Path) -> None:
    assert b"\0PYTHONMALLOC=malloc\0" in b"\0" + started_environ(local_config(tmp_path), None)


def test_an_explicit_allocator_is_respected(tmp_path: Path) -> None:
    assert b"\0PYTHONMALLOC=pymalloc\0" in b"\0" + started_environ(local_config(tmp_path), "pymalloc")
