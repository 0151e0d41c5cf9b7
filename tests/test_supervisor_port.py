"""The supervisor's claim on its NTF port (supervisor/port.py), with real sockets: the instance's own workers
join it with ``SO_REUSEPORT``, also after a restart; another instance's claim, a ``workers = 1`` server's
listener and any other program's are refused while it is held, and the port is free again once it is
released. The whole processes are in tests/reliability/test_workers.py."""

from __future__ import annotations

import socket
import threading

import pytest

from ntf_server.supervisor.port import PortInUse, claim_port, exclusive


def worker_listener(port: int) -> socket.socket:
    """What a worker's listener is (asyncio ``create_server(reuse_port=True)``)."""
    return listening(port, reuse_port=True)


def single_listener(port: int) -> socket.socket:
    """What a ``workers = 1`` server's listener is (asyncio ``create_server``: SO_REUSEADDR only)."""
    return listening(port, reuse_port=False)


def listening(port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_join_the_claim_and_another_instance_is_refused() -> None:
    port = free_port()
    with claim_port("127.0.0.1", port) as claim:
        assert claim.getsockname()[1] == port
        with pytest.raises(PortInUse, match="Address already in use"):
            claim_port("127.0.0.1", port)  # another supervisor, no worker listening yet
        with pytest.raises(OSError, match="Address already in use"):
            single_listener(port)  # a workers = 1 server
        with worker_listener(port), worker_listener(port):  # the instance's two workers
            with pytest.raises(PortInUse):
                claim_port("127.0.0.1", port)
            with pytest.raises(PortInUse):
                claim_port("", port)  # every interface overlaps 127.0.0.1
        with worker_listener(port) as again:  # a restarted worker rejoins
            assert again.getsockname()[1] == port
    with claim_port("127.0.0.1", port):  # released with the supervisor
        pass


def test_a_port_another_program_listens_on_is_refused() -> None:
    for other in (single_listener, worker_listener):  # with SO_REUSEPORT or without
        with other(free_port()) as taken, pytest.raises(PortInUse):
            claim_port("127.0.0.1", taken.getsockname()[1])


def test_port_0_claims_a_free_port_the_workers_share() -> None:
    with claim_port("127.0.0.1", 0) as claim:
        port = claim.getsockname()[1]
        assert port != 0
        with worker_listener(port), pytest.raises(PortInUse):
            claim_port("127.0.0.1", port)


def test_connections_in_time_wait_of_a_one_process_run_do_not_block_the_claim() -> None:
    """A workers = 1 run just stopped leaves connections in TIME_WAIT without SO_REUSEPORT: the claim is still
    made (with SO_REUSEADDR, port.py), and the workers join it."""
    with single_listener(0) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its side goes to TIME_WAIT
        assert client.recv(1) == b""
        client.close()
    with socket.socket() as strict:  # the claim without SO_REUSEADDR is refused: this is the case to test
        strict.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="Address already in use"):
            strict.bind(("127.0.0.1", port))
    with claim_port("127.0.0.1", port), worker_listener(port):
        pass


def test_claims_of_one_port_are_made_one_at_a_time() -> None:
    """Step 1: while one supervisor probes and claims, another waits (and gives up after ``wait_s``)."""
    port = free_port()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(port):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(PortInUse, match="another ntf-server is claiming this port"), exclusive(port, wait_s=0.05):
            pass
    finally:
        release.set()
        holder.join()
    with exclusive(port):  # free again
        pass
