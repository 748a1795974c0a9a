"""Checkpointed state shared by tasks that collect the images their data loader skipped.

A task that names unreadable images (in ``self.unreadable``, a set of names) mixes in
:class:`KeepsUnreadable`, and the engine saves the names in every checkpoint and hands them
back on resume (:class:`esam.train.StatefulTask`), so a resumed run reports every image it
skipped, before the stop as well as after.
"""

from __future__ import annotations

from typing import Any


class KeepsUnreadable:
    """``state_dict`` / ``load_state_dict`` for a task's ``unreadable`` set of names."""

    unreadable: set[str]

    def state_dict(self) -> dict[str, Any]:
        """This process's unreadable images so far."""
        return {"unreadable": sorted(self.unreadable)}

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        """Add the names of saved processes' states."""
        for state in states:
            self.unreadable.update(state["unreadable"])
