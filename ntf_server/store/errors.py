"""Store errors, grouped by what the caller does next (STYLE 5)."""

from __future__ import annotations


class StoreError(Exception):
    """The store could not do what was asked (bad data, server error); answer `ERR STORE`/log, carry on."""


class StoreUnavailable(StoreError):
    """Redis could not be reached even after retries; callers may back off and try again later."""


class FencedOut(Exception):
    """A status write carried a lease (fencing token) that is no longer the SMP server's (store/leases.py):
    another instance owns the server now; the writer stops serving it. Not a StoreError: retrying cannot help."""
