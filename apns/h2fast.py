"""h2's client connection with two shortcuts for the one request shape APNs needs.

Measured with tests/bench/apns_throughput.py: together they took client CPU from ~95 to ~63 us a push.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import h2.config
import h2.connection
import h2.exceptions
from h2.stream import StreamInputs

# The internals the shortcuts rely on; if a future h2 drops them, we fall back on h2's public path.
_INTERNALS_OK: Final = all(hasattr(h2.connection.H2Connection, name) for name in ("_begin_new_stream", "_open_streams"))
_FRAME_HEAD: Final = struct.Struct(">BHBBL")  # 24-bit length, type, flags, stream id (RFC 9113 4.1)


class FastH2(h2.connection.H2Connection):
    """h2 with two shortcuts for the one request shape APNs needs (measured: tests/bench/apns_throughput.py).

    * h2 counts open streams by walking every stream each time one opens (pruning closed ones as it goes):
      ~30 us a push at 100 in flight. We already know the count (one pending reply per open stream), so we
      report it, and let h2 prune only every `_PRUNE_EVERY` opens.
    * `fast_request`: HEADERS (one frame, END_HEADERS) + DATA (one frame, END_STREAM) serialised directly,
      with exactly the state changes h2's send_headers/send_data make (new stream, its state machine driven
      IDLE -> OPEN -> HALF_CLOSED_LOCAL, both send windows debited, bytes queued in h2's output buffer so
      frame order is kept). It uses h2 internals (`_begin_new_stream`, `_data_to_send`), checked against h2
      4.x by the whole test suite; anything unusual (window or frame size) takes h2's public path.
    """

    _PRUNE_EVERY: Final = 64
    # h2 remembers how each closed stream ended, up to 65,536 of them (~270 B each: ~17 MB per long-lived
    # APNs connection). Enough for a late frame on a just-closed stream: a little above APNs' 1,000
    # concurrent streams; an older id gets h2's answer for an unknown closed stream (RST_STREAM).
    MAX_CLOSED_STREAMS = 2048

    def __init__(self, config: h2.config.H2Configuration, count: Callable[[], int]) -> None:
        super().__init__(config)
        self._count = count
        self._opens = 0

    @property
    def open_outbound_streams(self) -> int:
        if not _INTERNALS_OK:
            return super().open_outbound_streams
        self._opens += 1
        if self._opens % self._PRUNE_EVERY == 0:
            self._open_streams(1)  # client streams are odd; this moves closed ones out of `streams`
        return self._count()

    def fast_request(self, sid: int, block: bytes, body: bytes) -> bool:
        n = len(body)
        limit = self.max_outbound_frame_size
        if (
            not _INTERNALS_OK
            or not isinstance(getattr(self, "_data_to_send", None), bytearray)
            or len(block) > limit
            or n > limit
            or n > self.outbound_flow_control_window
            or n > self.remote_settings.initial_window_size
            or self.state_machine.state is not h2.connection.ConnectionState.CLIENT_OPEN
        ):
            return False
        if self.open_outbound_streams + 1 > self.remote_settings.max_concurrent_streams:
            raise h2.exceptions.TooManyStreamsError("stream limit")
        stream = self._begin_new_stream(sid, h2.connection.AllowedStreamIDs.ODD)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_HEADERS)
        machine.process_input(StreamInputs.SEND_DATA)
        machine.process_input(StreamInputs.SEND_END_STREAM)
        stream.request_method = b"POST"
        stream.outbound_flow_control_window -= n
        self.outbound_flow_control_window -= n
        self._data_to_send += (
            _FRAME_HEAD.pack(len(block) >> 16, len(block) & 0xFFFF, 0x1, 0x4, sid)  # HEADERS, END_HEADERS
            + block
            + _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, 0x0, 0x1, sid)  # DATA, END_STREAM
            + body
        )
        return True
