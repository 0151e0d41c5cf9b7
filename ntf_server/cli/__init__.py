"""Command-line entry point ``ntf-server`` (§6.7, README "Operating it"), one module per command group.

``main.py`` parses the command line and dispatches; ``init.py``: ``init`` and ``config-reference``;
``start.py``: ``start`` and ``check-config``; ``admin_client.py``: ``stats``, ``status`` and ``policy``, which
talk to the running server's admin API through ``remote.py`` (the HTTP client) and print ``tables.py`` and
``screen.py`` (the admin HTTP *server* is ``ntf_server/admin/``); ``demo.py`` and ``importing.py``: ``demo`` and
``import-simplex``; ``common.py``: what several commands share (loading and checking a config directory).
Only the commands that need the server import it, when run (ntf_server/README.md's import rule).
"""

from ntf_server.cli.common import CONFIG_DIR_ENV as CONFIG_DIR_ENV
from ntf_server.cli.main import build_parser as build_parser, main as main
