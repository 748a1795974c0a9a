"""Exceptions whose message is meant for the user.

The ``esam`` command prints a :class:`UserError` as one line, without a traceback, and exits
with status 2 (as it does for ``ValueError`` and ``FileNotFoundError``). Library callers catch
it like any other exception.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on from its message alone (bad input, a failed peer process)."""
