"""Helpers shared by more than one test folder (and by tests/bench): ``from helpers.e2e_env import Env``.

tests/ is on pytest's path (``pythonpath`` in pyproject.toml); a bench script puts it there itself. A
helper used by one folder only stays in that folder (tests/apns/apns_helpers.py, tests/reliability/...).
Test folders have no ``__init__.py``, and a module named ``conftest`` cannot be imported by tests (every
folder has one): shared code lives here, shared fixtures in tests/conftest.py.

- ``e2e_env``: a real NTF server on loopback pointed at the strict APNs simulator (the ``env`` fixtures)
- ``fault_proxy``: a unix-socket proxy in front of Redis that cuts connections at a chosen byte
- ``store_helpers``: records, keys and test-only queries for store tests (store, push, subscriber, importer)
- ``pg_server``: a throwaway PostgreSQL cluster for the import tests (the ``postgres`` session fixture)
- ``haskell_data``: Haskell ntf-server databases generated for the import tests and bench
- ``logparse``: reading log lines back (logfmt and JSON)
- ``timing_stats``: the statistics of the auth-timing test and benchmark
"""
