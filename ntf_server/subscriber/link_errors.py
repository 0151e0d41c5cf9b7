"""What can end an SMP connection, as the pool sees it (STYLE 5): four exceptions, grouped by what the
pool does next. Library exceptions (OSError, ssl.SSLError, TimeoutError, ChainError, the sans-IO
``SmpHandshakeRejected``/``SmpProtocolError``) are translated into these in ``connect.py`` and ``client.py`` only.

* :class:`ConnectFailed`: no TCP/TLS connection to any host (DNS, refused, unreachable, timeout) — retry
  with backoff; subscriptions stay pending.
* :class:`HandshakeFailed`: connected, but the server is not the pinned one, speaks no common version or
  closed during the handshake — retry with backoff; nothing was sent.
  :class:`ServiceRefused` (one of them): the server refused our service certificate — connect without.
* :class:`ConnectionLost`: an established connection ended (EOF, reset, a write that does not drain,
  repeated response timeouts, or our own close) — resubscribe on a new connection.
* :class:`ProtocolError`: the server sent a block we cannot use (from v11 the block cipher chain is then
  out of step) — drop and reconnect like a lost connection, but worth a louder log line.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of the SMP client's errors; the message never contains queue ids or keys."""


class ConnectFailed(ClientError):
    pass


class HandshakeFailed(ClientError):
    pass


class ServiceRefused(HandshakeFailed):
    """The SMP server refused our service certificate in the handshake (e.g. ``BAD_SERVICE``): drop the
    ties to the service and connect without it."""


class ConnectionLost(ClientError):
    pass


class ProtocolError(ClientError):
    pass
