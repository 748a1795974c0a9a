"""Exceptions whose message is meant for the user.

The ``esam`` command prints a :class:`UserError` (and an ``OSError``, whose message names the
file) as one line, without a traceback, and exits with status 2. Every other exception keeps
its traceback: it is a bug to report, not a mistake in the input. Library callers catch these
like any other exception.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on from its message alone (bad input, a failed peer process)."""


class InputError(UserError, ValueError):
    """A bad value given by the user: a setting, an argument, or the content of an input file.

    Also a ``ValueError``, so callers that catch ``ValueError`` keep working.
    """
