"""Sans-IO SimpleX wire codec (NTF and the SMP subset the notification server needs).

Nothing here performs I/O or imports asyncio/ssl/socket/redis (enforced by ``ruff.toml`` beside this file).
"""
