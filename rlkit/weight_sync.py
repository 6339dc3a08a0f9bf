"""Learner -> rollout engines weight sync.

The object-store path (the default, and the one that runs on CPU): rank 0 of the learner puts
a CPU state dict into Ray's object store once and every rollout actor reads it from there
(zero-copy for actors on the same node). The version number is stamped on every token the
engines sample afterwards, which is what partial rollouts use to tell stale tokens.

What an engine does with the state dict is its own `load_weights`: the transformers engine loads
it into its model; the vLLM engine converts it to checkpoint format and reloads it into the
running engine in place, then drops its prefix cache (`rlkit.rollout.vllm_sync`).
"""

from __future__ import annotations

import time

from ray.exceptions import RayTaskError

from rlkit.actors import LearnerDied, LearnerGroup, RolloutGroup


def sync_weights(learners: LearnerGroup, rollouts: RolloutGroup, version: int) -> float:
    """Push the learner's current weights to every engine; returns the seconds it took."""
    start = time.perf_counter()
    try:
        rollouts.load_weights(learners.state_dict_ref(), version)
    except RayTaskError as err:  # the engines are alive; the weights they were sent were lost with their learner
        raise LearnerDied(f"a learner rank died before its weights reached the engines "
                          f"({str(err).splitlines()[0][:200]})") from None
    return time.perf_counter() - start
