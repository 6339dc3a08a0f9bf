"""The Ray actor behind a learned reward (reward model or judge), started on first use.

`rlkit.reward_actors` is reached by name only here, so the `rewards` package imports without Ray.
"""

from __future__ import annotations

import importlib
from typing import Any


class RemoteActor:
    """One actor of class `actor` (in `rlkit.reward_actors`) holding the model at `path`; one GPU when
    `device` is "cuda"."""

    def __init__(self, actor: str, path: str, options: dict[str, Any], *, device: str, num_cpus: float) -> None:
        self.actor, self.path, self.options = actor, path, options
        self.num_cpus, self.num_gpus = num_cpus, (1 if device == "cuda" else 0)
        self._handle = None

    def call(self, method: str, *args: Any) -> Any:
        actors = importlib.import_module("rlkit.reward_actors")
        if self._handle is None:
            self._handle = actors.start(self.actor, self.path, self.options, num_cpus=self.num_cpus,
                                        num_gpus=self.num_gpus)
        return actors.call(self._handle, method, *args)

    def close(self) -> None:
        if self._handle is not None:
            importlib.import_module("rlkit.reward_actors").stop(self._handle)
            self._handle = None
