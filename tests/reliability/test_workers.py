"""``[server] workers = 2``: one ``ntf-server start`` runs a supervisor and two worker processes on one port
and one store (README "Workers"). Real processes: the supervisor is started as an operator starts it, an
APNs simulator and SMP stand-ins are the world. A worker killed with kill -9 is started again and its SMP
servers are subscribed again; SIGTERM to the supervisor drains every worker, no push lost; both workers
accept TNEWs on the one port, and worker 0's admin API answers for both."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers.e2e_env import TOPIC
from instances import decrypt, lease_owners, until
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, free_port, init_config

from apns.jwt import generate_test_key
from apns.simulator import ApnsSimulator, SimulatorKey
from ntf_server.config import load_config
from ntf_server.protocol import crypto, ntf as P
from ntf_server.sim.device import NtfClient, SimApp
from ntf_server.sim.smp_server import QueueCredentials, SmpServerStandIn
from ntf_server.supervisor.supervisor import MAX_QUICK_FAILURES

TTL_S, RENEW_S = 2.0, 0.5  # as instances.FAST: a takeover within seconds
STAND_INS, QUEUES = 4, 5


def worker_pids(supervisor: int) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children's command lines (…worker <dir> <index> …)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = {}
    for pid in map(int, children):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"ntf_server.supervisor.worker" in argv:
            found[int(argv[argv.index(b"ntf_server.supervisor.worker") + 2])] = pid
    return found


def established(pid: int, port: int) -> int:
    """Client sockets of ``pid`` connected to local ``port`` (from /proc: the kernel's own view)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                count += 1
    return count


async def admin_get(w: World, path: str) -> str:
    cfg = load_config(w.server.config_dir)
    token = cfg.admin.token().read().decode().strip()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        r = await http.get(f"http://127.0.0.1:{cfg.admin.port}{path}")
    r.raise_for_status()
    return r.text


@dataclass
class World:
    server: ServerProcess
    sim: ApnsSimulator
    app: SimApp
    device: str
    queues: dict[bytes, tuple[SmpServerStandIn, QueueCredentials]]
    prefix: str

    @property
    def supervisor(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def all_subscribed(self) -> bool:
        return all(smp.subscriber_of(nid) is not None for nid, (smp, _) in self.queues.items())

    def pushed(self) -> set[bytes]:
        """Every message id a push carried so far, decrypted as the app does."""
        creds = {n: c for n, (_, c) in self.queues.items()}
        return {decrypt(self.app, item, creds) for p in self.sim.pushes(self.device) if b'"message"' in p.body
                for item in self.app.message_list(p.body)}


@asynccontextmanager
async def two_workers(tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> AsyncIterator[World]:
    """A supervisor with two workers, a verified device and QUEUES queues on each of STAND_INS SMP servers,
    every queue subscribed."""
    key = generate_test_key("KEYID00001", "TEAMID0001")
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(key.key_pem)
    p8.chmod(0o600)
    async with ApnsSimulator([SimulatorKey.from_provider_key(key)], seed=1) as sim:
        cfg = init_config(tmp_path / "cfg", {
            ("server", "workers"): 2, ("admin", "port"): free_port(),
            ("redis", "url"): redis_url, ("registration", "per_connection_per_min"): 0.0,
            ("registration", "per_ip_per_min"): 0.0, ("apns.test", "enabled"): True,
            ("apns.test", "host"): "127.0.0.1", ("apns.test", "port"): sim.port,
            ("apns.test", "ca_file"): str(sim.ca_file), ("apns.test", "key_file"): str(p8),
            ("apns.test", "key_id"): key.key_id, ("apns.test", "team_id"): key.team_id,
            ("apns.test", "topic"): TOPIC, ("push", "hidden_per_hour"): 0.0,
            ("subscriber", "lease_ttl_s"): TTL_S, ("subscriber", "lease_renew_s"): RENEW_S,
        })
        text = (cfg / "ntf-server.toml").read_text()
        prefix = re.search(r'^key_prefix = "(.*)"$', text, re.M).group(1)  # type: ignore[union-attr]
        server = ServerProcess(cfg, tmp_path / "server.log")
        stand_ins: list[SmpServerStandIn] = [await make_server() for _ in range(STAND_INS)]  # type: ignore[misc]
        await server.start()
        try:
            client = await NtfClient.connect("127.0.0.1", server.port, server.key_hash)
            app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
            assert isinstance(await app.register(client), P.IdTkn)
            device = app.device_token.token.decode()
            push = await sim.next_push(device, 30)
            assert await app.token_command(client, P.TVfy(app.verification_code(push.body))) == P.Ok()
            queues = {}
            for smp in stand_ins:
                for _ in range(QUEUES):
                    nkey = crypto.generate_ed25519()
                    creds, _ = smp.create_queue(crypto.public_of(nkey))
                    assert isinstance(await app.subscribe(client, smp.address, creds.notifier_id, nkey), P.IdSub)
                    queues[creds.notifier_id] = (smp, creds)
            await client.close()
            world = World(server, sim, app, device, queues, prefix)
            await until(world.all_subscribed, 30)
            yield world
        finally:
            await server.stop()


async def test_a_worker_killed_is_started_again_and_its_smp_servers_subscribed_again(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> None:
    async with two_workers(tmp_path, redis_url, make_server) as w:
        state = w.server.config_dir / "state"
        ids = {(state / f"instance.worker-{i}").read_text().strip(): i for i in (0, 1)}
        await until(lambda: len(worker_pids(w.supervisor)) == 2, 10)
        owners = [ids.get(o or "") for o in await lease_owners(redis_url, w.prefix)]
        assert len(owners) == STAND_INS and None not in owners  # every SMP server held by one of the workers
        victim = max((0, 1), key=owners.count)  # the worker holding more SMP servers (at least one)
        old = worker_pids(w.supervisor)
        os.kill(old[victim], signal.SIGKILL)
        t0 = time.monotonic()
        await until(lambda: worker_pids(w.supervisor).get(victim, old[victim]) != old[victim], 30)
        stand_ins = {smp for smp, _ in w.queues.values()}

        async def taken_over() -> bool:
            held = await lease_owners(redis_url, w.prefix)
            return (w.all_subscribed() and all(smp.connections == 1 for smp in stand_ins)
                    and None not in held and set(held) <= {(state / f"instance.worker-{i}").read_text().strip()
                                                           for i in (0, 1)})

        async with asyncio.timeout(TTL_S + RENEW_S + 30):
            while not await taken_over():  # noqa: ASYNC110 - processes, Redis and stand-ins: no common event
                await asyncio.sleep(0.05)
        took_s = time.monotonic() - t0
        for i, (smp, creds) in enumerate(w.queues.values()):
            smp.notify(creds.notifier_id, b"after-%03d" % i, 1_700_000_001)
        expected = {b"after-%03d" % i for i in range(len(w.queues))}
        await until(lambda: expected <= w.pushed(), 30)
        server_log = tmp_path / "server.log"
        # the other worker may have taken the SMP servers before the new one serves: wait for it to say so
        await until(lambda: f"event=supervisor.worker_started worker={victim}" in server_log.read_text(), 60)
        log = server_log.read_text()
        assert f"event=supervisor.worker_exited worker={victim} pid={old[victim]} status=\"signal SIGKILL\"" in log
        assert f" worker={victim} logger=ntf_server.subscriber.leases" in log  # a worker's lines say which
        samples = {(s.name, s.labels.get("worker")): s.value
                   for family in text_string_to_metric_families(await admin_get(w, "/metrics"))
                   for s in family.samples}
        assert samples[("ntf_worker_restarts_total", str(victim))] == 1
        assert samples[("ntf_worker_restarts_total", str(1 - victim))] == 0
    print(f"kill -9 of worker {victim} ({owners.count(victim)} of {STAND_INS} SMP servers): started again and "
          f"every queue subscribed {took_s:.2f} s later")


async def test_sigterm_to_the_supervisor_drains_every_worker_no_push_lost(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> None:
    async with two_workers(tmp_path, redis_url, make_server) as w:
        w.sim.faults.response_delay_s = 0.2  # pushes are still queued and in flight when SIGTERM comes
        assert len({smp for smp, _ in w.queues.values()}) == STAND_INS
        for i, (smp, creds) in enumerate(w.queues.values()):
            smp.notify(creds.notifier_id, b"burst-%03d" % i, 1_700_000_001)
        await until(lambda: len(w.sim.pushes(w.device)) > 1, 30)  # the first push is on its way
        assert w.server.proc is not None
        w.server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            status = await w.server.proc.wait()
        assert status == 0
        log = (tmp_path / "server.log").read_text()
        assert log.count("event=supervisor.worker_stopped") == 2
        assert log.count('status="exit status 0"') == 2
        assert {b"burst-%03d" % i for i in range(len(w.queues))} <= w.pushed()  # every one sent before the exit


async def test_two_workers_accept_tnews_on_one_port(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> None:
    async with two_workers(tmp_path, redis_url, make_server) as w:
        clients = [await NtfClient.connect("127.0.0.1", w.server.port, w.server.key_hash) for _ in range(24)]
        try:
            for client in clients:
                app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
                assert isinstance(await app.register(client), P.IdTkn)
            per_worker = {i: established(pid, w.server.port) for i, pid in worker_pids(w.supervisor).items()}
            assert sum(per_worker.values()) == len(clients)
            assert all(n > 0 for n in per_worker.values()), per_worker  # the kernel spread them (SO_REUSEPORT)
            # worker 0's admin API answers for the instance: sums over both, each worker labelled
            metrics = await admin_get(w, "/metrics")
            samples = {(s.name, s.labels.get("worker")): s.value
                       for family in text_string_to_metric_families(metrics) for s in family.samples}
            assert samples[("ntf_tokens_created_total", None)] == len(clients) + 1  # and the first device's
            assert samples[("ntf_client_connections", None)] == len(clients)
            assert {i: samples[("ntf_worker_client_connections", str(i))] for i in (0, 1)} == per_worker
            assert samples[("ntf_worker_up", "0")] == samples[("ntf_worker_up", "1")] == 1
            assert sum(samples[("ntf_worker_smp_servers", str(i))] for i in (0, 1)) == STAND_INS
            smp = json.loads(await admin_get(w, "/v1/smp-servers"))
            assert sum(smp["other"]["by_worker"].values()) == STAND_INS
            status = json.loads(await admin_get(w, "/v1/status"))
            assert [(r["worker"], r["client_connections"]) for r in status["workers"]] == sorted(per_worker.items())
        finally:
            for client in clients:
                await client.close()


async def metric_samples(w: World) -> dict[tuple[str, str | None], float]:
    return {(s.name, s.labels.get("worker")): s.value
            for family in text_string_to_metric_families(await admin_get(w, "/metrics")) for s in family.samples}


async def test_summed_counters_do_not_fall_when_a_worker_is_killed_and_started_again(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> None:
    """Worker 1 accepted connections and TNEWs; kill -9 of it: the instance's counters (its own start again
    from 0) stay where they were while it is down and after it serves again, in /metrics and /v1/stats."""
    counted = ("ntf_tokens_created_total", "ntf_conn_accepted_total", "ntf_req_received_total")
    async with two_workers(tmp_path, redis_url, make_server) as w:
        await until(lambda: len(worker_pids(w.supervisor)) == 2, 10)
        old = worker_pids(w.supervisor)
        clients: list[NtfClient] = []
        try:
            while established(old[1], w.server.port) < 3:  # the kernel spreads them: worker 1 has some
                assert len(clients) < 200
                clients.append(await NtfClient.connect("127.0.0.1", w.server.port, w.server.key_hash))
            for client in clients:
                app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
                assert isinstance(await app.register(client), P.IdTkn)
        finally:
            for client in clients:
                await client.close()
        before = await metric_samples(w)
        assert before[("ntf_tokens_created_total", None)] == len(clients) + 1  # and the first device's
        stats_before = json.loads(await admin_get(w, "/v1/stats"))["counters"]
        os.kill(old[1], signal.SIGKILL)
        await until(lambda: not Path(f"/proc/{old[1]}").exists(), 10)
        down = await metric_samples(w)  # as a rule still restarting (worker_restart_s, 1 s): shown down
        server_log = tmp_path / "server.log"
        await until(lambda: "event=supervisor.worker_started worker=1" in server_log.read_text(), 60)
        after = await metric_samples(w)
        assert after[("ntf_worker_up", "1")] == 1 and after[("ntf_worker_restarts_total", "1")] == 1
        for name in counted:
            assert before[(name, None)] > 0
            assert down[(name, None)] >= before[(name, None)], (name, before[(name, None)], down[(name, None)])
            assert after[(name, None)] >= before[(name, None)], (name, before[(name, None)], after[(name, None)])
        stats_after = json.loads(await admin_get(w, "/v1/stats"))["counters"]
        assert all(stats_after[k] >= v for k, v in stats_before.items()), (stats_before, stats_after)
        client = await NtfClient.connect("127.0.0.1", w.server.port, w.server.key_hash)  # and still counting
        try:
            app = SimApp(P.DeviceToken(P.PushProvider.APNS_TEST, os.urandom(32).hex().encode()))
            assert isinstance(await app.register(client), P.IdTkn)
        finally:
            await client.close()
        assert (await metric_samples(w))[("ntf_tokens_created_total", None)] == len(clients) + 2


async def test_a_worker_that_cannot_start_stops_start_with_its_reason(
        tmp_path: Path, redis_url: str) -> None:
    """The admin port is taken by another program: worker 0 fails to serve it; ``start`` stops the other worker
    and exits 1 with the worker's line and the supervisor's, no traceback, nothing left running. (A taken NTF
    port is found by the supervisor before any worker starts: the next tests.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = init_config(tmp_path / "cfg", {("server", "workers"): 2, ("redis", "url"): redis_url,
                                             ("admin", "port"): taken.getsockname()[1]})
        text = await start_fails(cfg)
    assert "ntf-server: worker 0: admin API: cannot listen on 127.0.0.1:" in text
    assert re.search(r"^ntf-server: worker 0 could not start \(exit status 1\)$", text, re.M), text


async def start_fails(cfg: Path) -> str:
    """``ntf-server start`` of ``cfg``, which must fail: exit status 1, no traceback, no worker left running;
    its stderr. If it starts instead, it is stopped and the test fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ntf_server.cli", "--config-dir", str(cfg), "start",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())  # read alongside: a full pipe would stall it
    try:
        async with asyncio.timeout(60):
            while line := await proc.stdout.readline():
                assert not line.startswith(b"Listening on port"), "it started: " + line.decode()
            err = await stderr
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        stderr.cancel()
    text = err.decode()
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert workers_of(cfg) == []
    return text


async def test_a_second_instance_on_the_port_of_one_with_workers_fails_to_start(
        tmp_path: Path, redis_url: str) -> None:
    """Another state directory, the same ``server.port``: with two workers (SO_REUSEPORT would have let it
    share the port) or one, it exits 1 with "address in use" and leaves nothing running; the first instance
    keeps the port alone: every connection is its workers'."""
    first = init_config(tmp_path / "first", {("server", "workers"): 2, ("redis", "url"): redis_url})
    server = ServerProcess(first, tmp_path / "first.log")
    await server.start()
    assert server.proc is not None
    try:
        for workers in (2, 1):
            second = init_config(tmp_path / f"second-{workers}", {
                ("server", "workers"): workers, ("redis", "url"): redis_url, ("server", "port"): server.port})
            text = await start_fails(second)
            assert text.strip().splitlines()[-1] == (
                f"ntf-server: cannot listen on 127.0.0.1:{server.port}: Address already in use"), text
        pids = worker_pids(server.proc.pid)
        assert len(pids) == 2
        clients = [await NtfClient.connect("127.0.0.1", server.port, server.key_hash) for _ in range(8)]
        try:
            assert sum(established(pid, server.port) for pid in pids.values()) == len(clients)
        finally:
            for client in clients:
                await client.close()
    finally:
        await server.stop()


async def test_an_instance_with_workers_on_the_port_of_a_one_process_instance_fails_to_start(
        tmp_path: Path, redis_url: str) -> None:
    first = init_config(tmp_path / "first", {("server", "workers"): 1, ("redis", "url"): redis_url})
    server = ServerProcess(first, tmp_path / "first.log")
    await server.start()
    try:
        second = init_config(tmp_path / "second", {
            ("server", "workers"): 2, ("redis", "url"): redis_url, ("server", "port"): server.port})
        text = await start_fails(second)
        assert text.strip().splitlines() == [
            f"ntf-server: cannot listen on 127.0.0.1:{server.port}: Address already in use"], text
        client = await NtfClient.connect("127.0.0.1", server.port, server.key_hash)
        await client.close()
    finally:
        await server.stop()


def workers_of(config_dir: Path) -> list[int]:
    """Worker processes of ``config_dir`` still running, whoever their parent."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"ntf_server.supervisor.worker" in argv and str(config_dir).encode() in argv:
            found.append(int(entry.name))
    return found


async def test_workers_of_a_supervisor_killed_with_kill_9_drain_and_exit(
        tmp_path: Path, redis_url: str, make_server: Callable[..., object]) -> None:
    """Their stdin ends with the supervisor: each stops as on SIGTERM (its own wind_down), none is left."""
    async with two_workers(tmp_path, redis_url, make_server) as w:
        pids = worker_pids(w.supervisor)
        await w.server.kill9()
        await until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids.values()), 60)
        log = (tmp_path / "server.log").read_text()
        for i in (0, 1):  # the pipeline's last line of a graceful stop, from each worker
            assert re.search(rf"event=push\.stopped .* worker={i} ", log), log[-3000:]


async def test_a_worker_that_keeps_dying_stops_the_instance(tmp_path: Path, redis_url: str) -> None:
    """Killed again as soon as it is started again, five times in a row: the supervisor gives up on it, stops
    the other worker gracefully and exits 1, saying which worker and why (systemd and the operator take over)."""
    cfg = init_config(tmp_path / "cfg", {("server", "workers"): 2, ("redis", "url"): redis_url,
                                         ("server", "worker_restart_s"): 0.1})  # 0.1, 0.2, 0.4, 0.8 s
    server = ServerProcess(cfg, tmp_path / "server.log")
    await server.start()
    assert server.proc is not None
    supervisor = server.proc.pid
    try:
        pid = worker_pids(supervisor)[1]
        for death in range(1, MAX_QUICK_FAILURES + 1):
            os.kill(pid, signal.SIGKILL)
            if death < MAX_QUICK_FAILURES:  # the next one, started after the backoff
                await until(lambda: worker_pids(supervisor).get(1, pid) != pid, 30)  # noqa: B023
                pid = worker_pids(supervisor)[1]
        async with asyncio.timeout(60):
            status = await server.proc.wait()
    finally:
        await server.stop()
    log = (tmp_path / "server.log").read_text()
    assert status == 1
    assert f"event=supervisor.worker_failing worker=1 status=\"signal SIGKILL\" failures={MAX_QUICK_FAILURES}" in log
    assert log.count("event=supervisor.worker_exited worker=1") == MAX_QUICK_FAILURES - 1
    assert 'event=supervisor.worker_stopped worker=0' in log and "Traceback" not in log
    assert workers_of(cfg) == []
