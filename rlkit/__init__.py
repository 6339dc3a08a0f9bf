"""rlkit: RL post-training of reasoning models (R1-Zero / Kimi k1.5 style).

Importing `rlkit` is light: it pulls in neither Ray, vLLM nor transformers.
The heavy pieces live in submodules (`rlkit.rollout`, `rlkit.learner`, `rlkit.actors`).
"""

__version__ = "0.1.0"

from rlkit.logging import hide_library_deprecations  # noqa: E402

hide_library_deprecations()  # here, so that every process that runs rlkit code (each Ray actor) does it
