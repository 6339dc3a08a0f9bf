"""Ray actors that hold reward models and judges, so the driver never loads their weights.

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


@ray.remote
class JudgeActor:
    """A judge model behind a rollout engine: rendered prompts in, greedy answers out."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        import torch

        from rlkit.rollout.engine import make_engine

        torch.set_num_threads(max(1, options.get("threads", 1)))
        self.engine = make_engine(options.get("engine", "hf"), model_path=path, device=options.get("device", "cpu"),
                                  dtype=options.get("dtype", "float32"), seed=0)
        self.tokenizer = self.engine.tokenizer

    def judge(self, texts: list[str], max_new_tokens: int) -> list[str]:
        from rlkit.types import GenerationRequest, SamplingParams

        requests = [GenerationRequest(self._prompt_ids(t)) for t in texts]
        rollouts = self.engine.generate(requests, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
        return [self.tokenizer.decode(r.completion_ids, skip_special_tokens=True) for r in rollouts]

    def _prompt_ids(self, text: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):  # an instruction-tuned judge is asked as a user
            return list(self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                           add_generation_prompt=True, return_dict=False))
        return self.tokenizer(text)["input_ids"]


ACTORS = {"RewardModelActor": RewardModelActor, "JudgeActor": JudgeActor}


def start(actor: str, path: str, options: dict[str, Any], *, num_cpus: float = 1, num_gpus: float = 0):
    if not ray.is_initialized():
        from rlkit.actors import init_ray

        init_ray()
    return ACTORS[actor].options(num_cpus=num_cpus, num_gpus=num_gpus).remote(path, options)


def call(handle, method: str, *args: Any) -> Any:
    return ray.get(getattr(handle, method).remote(*args))


def stop(actor) -> None:
    ray.kill(actor)
