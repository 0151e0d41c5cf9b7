"""A strict local APNs for tests, the demo and phone-less development (see server.py for its behaviour).

Modules, each importing only those before it: `limits` (Apple's documented limits, written down on their
own so a wrong limit in the client is caught) <- `rules` (request checks, Apple's reason strings) <- `conn`
(one HTTP/2 connection) <- `server` (`ApnsSimulator`); `tls` (throw-away CA) is used by `server`; `cli` and
`__main__` (`python -m apns.simulator`) sit on top.
"""

from __future__ import annotations

from apns.simulator.rules import SimulatorKey as SimulatorKey
from apns.simulator.server import ApnsSimulator as ApnsSimulator, Faults as Faults, RecordedPush as RecordedPush

__all__ = ["ApnsSimulator", "Faults", "RecordedPush", "SimulatorKey"]
