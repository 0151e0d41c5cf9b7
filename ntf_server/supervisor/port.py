"""The instance's claim on its NTF port (``[server] workers`` above 1; README "Workers").

Theory of operation. The workers of one instance each listen on the port with ``SO_REUSEPORT``, and Linux lets
any socket of the same user that also sets ``SO_REUSEPORT`` join that group: a second instance started on the
same port would share it silently instead of failing. So the supervisor claims the port before it starts any
worker, and holds the claim for its whole life:

1. ``exclusive``: a few milliseconds of machine-wide mutual exclusion between supervisors claiming the same port
   (an abstract Unix socket named after the port: atomic, per network namespace as the TCP port is, gone with
   its process even after kill -9, no file to leave behind);
2. the *probe*: a bind of the address without ``SO_REUSEPORT`` (with ``SO_REUSEADDR``, as a listener, so
   connections of an earlier run in TIME_WAIT do not count). Linux refuses it while any socket is listening
   on an overlapping address (another instance's workers, a ``workers = 1`` server, any other program) or is
   bound there without ``SO_REUSEADDR`` (another supervisor's claim, step 3): "address in use". Then closed;
3. the *claim*: a socket bound with ``SO_REUSEPORT`` and without ``SO_REUSEADDR``, never listening (the kernel
   gives connections only to listening sockets), held until the supervisor ends. The instance's own workers,
   restarted or not, join it (same user, ``SO_REUSEPORT``); every later probe fails on it (step 2), and so does
   a ``workers = 1`` server's bind (no ``SO_REUSEPORT``), even while every worker is down.

Steps 2 and 3 run inside step 1, so two supervisors cannot both probe before either claims. What remains:
another program (not ntf-server) of the same user that binds with ``SO_REUSEPORT`` is not stopped (it does not
take part in step 1 and ``SO_REUSEPORT`` is what it asks for), and neither is anything outside this network
namespace (it has its own ports). If the claim of step 3 is refused although the probe passed, the address has
sockets that are neither listening nor claims: connections in TIME_WAIT of a server that did not use
``SO_REUSEPORT`` (a ``workers = 1`` run just stopped). Then the claim is made with ``SO_REUSEADDR`` too: the
workers still join it, but a probe (or a ``workers = 1`` bind) fails on this instance only while one of its
workers listens, so a second instance started while every worker of this one is restarting at once could
share the port or hold it alone (for that run only: the next start makes the strict claim).

``[server] port = 0`` (tests): the claim is bound to a free port the kernel picks; no probe is needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Final

EXCLUSIVE_WAIT_S: Final = 2.0  # another supervisor holds step 1 only for a few binds; a longer wait means stuck
_RETRY_S: Final = 0.01


class PortInUse(OSError):
    """The port is taken (``errno`` EADDRINUSE), by another instance or program; ``strerror`` says so."""


def _family(bind: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in bind else socket.AF_INET


def _address(bind: str, port: int) -> tuple[str, int]:
    return (bind or "0.0.0.0", port)  # noqa: S104 (empty bind = every interface, as the listener)


@contextlib.contextmanager
def exclusive(port: int, *, wait_s: float = EXCLUSIVE_WAIT_S) -> Iterator[None]:
    """Mutual exclusion between ntf-server supervisors claiming ``port`` on this machine (step 1). Linux only
    (abstract Unix sockets); elsewhere nothing, and two supervisors started at the same instant could both
    pass the probe."""
    if not sys.platform.startswith("linux"):
        yield
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                sock.bind(f"\0ntf-server.port.{port}")
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise PortInUse(errno.EADDRINUSE, "another ntf-server is claiming this port") from e
                time.sleep(_RETRY_S)  # blocking, at start-up before anything is served; milliseconds
        yield
    finally:
        sock.close()


def _socket(bind: str, *, reuse_address: bool, reuse_port: bool) -> socket.socket:
    sock = socket.socket(_family(bind), socket.SOCK_STREAM)
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _bound(sock: socket.socket, bind: str, port: int) -> socket.socket:
    """``sock`` bound to the address, or closed: ``PortInUse`` when the address is taken, else the ``OSError``."""
    try:
        sock.bind(_address(bind, port))
    except BaseException as e:
        sock.close()
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            raise PortInUse(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from e
        raise
    return sock


def claim_port(bind: str, port: int) -> socket.socket:
    """The bound, not listening, ``SO_REUSEPORT`` socket that holds ``port`` for this instance (``port`` 0: a
    free one, read it with ``getsockname``). Raises ``PortInUse`` when another instance or program has it,
    ``OSError`` for other bind failures (an address not on this machine)."""
    if port == 0:
        return _bound(_socket(bind, reuse_address=False, reuse_port=True), bind, 0)
    with exclusive(port):
        _bound(_socket(bind, reuse_address=True, reuse_port=False), bind, port).close()  # the probe
        try:
            return _bound(_socket(bind, reuse_address=False, reuse_port=True), bind, port)
        except PortInUse:  # TIME_WAIT of a non-SO_REUSEPORT server (module doc)
            return _bound(_socket(bind, reuse_address=True, reuse_port=True), bind, port)
