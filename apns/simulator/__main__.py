"""`python -m apns.simulator`: see cli.py."""

from __future__ import annotations

from apns.simulator.cli import main

main()
