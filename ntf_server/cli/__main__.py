"""``python -m ntf_server.cli``: the same as the ``ntf-server`` command."""

import sys

from ntf_server.cli.main import main

sys.exit(main())
