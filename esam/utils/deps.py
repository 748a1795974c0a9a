"""Optional dependencies of the benchmark harness, imported with a clear error when missing.

``pycocotools``, ``lvis`` and ``scipy`` come with the ``eval`` extra (``pip install
'esam[eval]'``). They are imported lazily through :func:`require`, so ``import esam.eval...``
works without them and a run that needs one stops with a :class:`MissingDependencyError` (an
``ImportError``) that names the extra to install, instead of a raw ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra provides it.

    Constructed like any ``ImportError`` (one message), so it survives being re-raised from a
    DataLoader worker; :func:`require` sets ``name`` (the missing module) and ``extra``.
    """

    extra: str | None = None


def require(module: str, extra: str = "eval") -> ModuleType:
    """Import ``module`` (e.g. ``pycocotools.mask``), or raise a clear error naming ``extra``.

    Args:
        module: dotted module name.
        extra: the ``esam`` extra that installs it.

    Raises:
        MissingDependencyError: ``module`` or the package it belongs to is not installed. An
            import error raised *inside* an installed package (a broken installation) propagates
            unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            top = module.split(".")[0]
            err = MissingDependencyError(
                f"{module} is needed here but the package {top!r} is not installed; "
                f"install it with: pip install 'esam[{extra}]'",
                name=missing,
            )
            err.extra = extra
            raise err from e
        raise
