"""Store errors, grouped by what the caller does next (STYLE 5)."""

from __future__ import annotations


class StoreError(Exception):
    """The store could not do what was asked (bad data, server error); answer `ERR STORE`/log, carry on."""


class StoreUnavailable(StoreError):
    """Redis could not be reached even after retries; callers may back off and try again later."""
