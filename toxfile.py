"""tox plugin of this project (tox loads ``toxfile.py`` beside ``tox.ini`` by itself).

It registers the runner ``shared-virtualenv``: a virtual environment that several tox
environments with the same ``env_dir`` and the same dependencies install once and then share.
The core environments (lint, tests, demo) use it, so the ~5.5 GB torch stack is installed once
per checkout instead of once per environment.

tox records the name of the environment that created a folder in ``.tox-info.json`` and
recreates the folder whenever another environment name uses it. This runner records the
folder's name instead, so switching between environments that share the folder reuses it. All
other checks stay as they are: a change of Python, dependencies, constraints (the lock file's
content) or extras still reinstalls or recreates the environment.

Do not run environments that share a folder in parallel: they install into one place (the
``depends`` settings in tox.ini order them, so ``tox p`` runs them one after the other).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tox.plugin import impl
from tox.tox_env.info import Info
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner
from tox.tox_env.register import ToxEnvRegister

_IDENTITY_SECTION = "ToxEnv"  # the part of .tox-info.json that holds the environment's name


class SharedEnvInfo(Info):
    """``.tox-info.json`` of a shared folder: the recorded name is the folder's, not the env's."""

    @contextmanager
    def compare(
        self, value: Any, section: str, sub_section: str | None = None
    ) -> Iterator[tuple[bool, Any | None]]:
        """Compare and store ``value`` as tox does, naming the folder instead of the env."""
        if section == _IDENTITY_SECTION and isinstance(value, dict) and "name" in value:
            value = {**value, "name": self._path.parent.name}
        with super().compare(value, section, sub_section) as outcome:
            yield outcome


class SharedVirtualEnvRunner(VirtualEnvRunner):
    """A virtualenv runner whose folder is shared by the environments that name it."""

    @staticmethod
    def id() -> str:
        """The value of ``runner`` in tox.ini that selects this runner."""
        return "shared-virtualenv"

    @property
    def cache(self) -> Info:
        """The environment's ``.tox-info.json``, keyed by folder rather than by env name."""
        return SharedEnvInfo(self.env_dir)


@impl
def tox_register_tox_env(register: ToxEnvRegister) -> None:
    """Make ``runner = shared-virtualenv`` available to tox.ini."""
    register.add_run_env(SharedVirtualEnvRunner)
