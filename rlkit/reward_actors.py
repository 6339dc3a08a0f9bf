"""Ray actors that hold reward models, so the driver never loads their weights.

`rewards.model.RemoteRewardModel` reaches this module by name on its first call (the `rewards`
package itself imports without Ray). One actor per reward model; it takes a GPU when the
model's device is "cuda". A failure inside the actor reaches the caller through `ray.get` as a
RayTaskError carrying the actor's traceback, never as a hang.
"""

from __future__ import annotations

from typing import Any

import ray


@ray.remote
class RewardModelActor:
    def __init__(self, path: str, options: dict[str, Any]) -> None:
        from rewards.model import RewardModelScorer

        self.scorer = RewardModelScorer(path, **options)

    def score(self, prompts: list[Any], completions: list[Any]) -> list[float | None]:
        return self.scorer.score(prompts, completions)


def start_reward_model_actor(path: str, options: dict[str, Any], *, num_cpus: float = 1, num_gpus: float = 0):
    if not ray.is_initialized():
        from rlkit.actors import init_ray

        init_ray()
    return RewardModelActor.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(path, options)


def score(actor, prompts: list[Any], completions: list[Any]) -> list[float | None]:
    return ray.get(actor.score.remote(prompts, completions))


def stop(actor) -> None:
    ray.kill(actor)
