"""Shared pieces of the benchmarks: the prompt workload, the reward, and one rlkit GRPO step.

`RLKitGRPO` builds the real rlkit stack that `recipes/r1_zero.py` runs (Ray RolloutGroup with
one engine actor, `hf` or `vllm`, LearnerGroup with one accelerate learner, Scorer, sync_weights) and
`step()` performs exactly one step of that recipe's loop: sample G completions for each of B
prompts, score them, group advantages, pack, one optimizer update, push the new weights. No
numerics are re-implemented here; every call is the recipe's own building block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.data import Problem, PromptSource, build_problems, load_rows
from rlkit.models import context_length, load_tokenizer


def parse_weights(text: str) -> dict[str, float]:
    """'think_format=1,tag_count=0.5' -> {'think_format': 1.0, 'tag_count': 0.5}."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        weights[name.strip()] = float(value) if value else 1.0
    if not weights:
        raise ValueError(f"no reward named in {text!r}")
    return weights


def load_problems(data: str, model: str, *, template: str = "r1_zero", max_new_tokens: int = 96,
                  prompt_column: str = "prompt", answer_column: str = "answer") -> list[Problem]:
    """Templated, tokenized prompts, checked against the model's context as the recipe does."""
    tokenizer = load_tokenizer(model)
    window = context_length(model)
    rows = load_rows(data, required=[prompt_column, answer_column])
    problems = build_problems(rows, tokenizer, prompt_column=prompt_column, template=template,
                              max_prompt_tokens=window - max_new_tokens if window else None, source=data)
    if answer_column != "answer":
        for p in problems:
            p.columns["answer"] = p.columns[answer_column]
    return problems


@dataclass
class StepTimes:
    generate_s: float
    score_s: float
    learn_s: float
    sync_s: float
    total_s: float
    completion_tokens: int
    samples: int


class RLKitGRPO:
    """The r1_zero recipe's per-step work, on its real Ray actors (call `close()` when done)."""

    def __init__(self, model: str, problems: list[Problem], weights: dict[str, float], *, B: int, G: int,
                 max_new_tokens: int, temperature: float = 1.0, lr: float = 1e-5, micro_batch_size: int = 16,
                 threads: int = 1, seed: int = 0, algo: AlgoConfig | None = None, engine: str = "hf") -> None:
        from rlkit.actors import LearnerGroup, RolloutGroup, init_ray
        from rlkit.scoring import Scorer
        from rlkit.types import SamplingParams
        from rlkit.weight_sync import sync_weights

        self.problems, self.B, self.G = problems, B, G
        self.tokenizer = load_tokenizer(model)
        self.algo = algo or AlgoConfig()
        self.scorer = Scorer(weights, accuracy="")
        self.source = PromptSource(len(problems), seed=seed, shuffle=True)
        self.sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
        learner_cfg = LearnerConfig(lr=lr, micro_batch_size=micro_batch_size, threads=threads)
        init_ray()
        self.rollouts = RolloutGroup(1, engine, {"model_path": model, "device": "cpu", "dtype": "float32",
                                                 "seed": seed}, threads=threads)
        self.learners = LearnerGroup(1, {"model_path": model, "cfg": learner_cfg, "algo": self.algo,
                                         "temperature": temperature, "max_new_tokens": max_new_tokens,
                                         "dtype": "float32", "seed": seed})
        self.version = 0
        sync_weights(self.learners, self.rollouts, version=self.version)

    def step(self) -> tuple[StepTimes, dict[str, float]]:
        from rlkit.scoring import assign_advantages
        from rlkit.types import GenerationRequest, pack_rollouts
        from rlkit.weight_sync import sync_weights

        G = self.G
        t0 = time.perf_counter()
        problems = [self.problems[i] for i in self.source.next_batch(self.B)]
        requests = [GenerationRequest(prompt_ids=p.prompt_ids, n=G, meta={"problem": p.index}) for p in problems]
        batch = self.rollouts.generate(requests, self.sampling)
        t1 = time.perf_counter()
        metrics = self.scorer.score(batch, problems, G)
        metrics.update(assign_advantages(batch, G, self.algo.advantage))
        t2 = time.perf_counter()
        metrics.update(self.learners.train_step(pack_rollouts(batch, self.tokenizer.pad_token_id)))
        t3 = time.perf_counter()
        self.version += 1
        sync_weights(self.learners, self.rollouts, version=self.version)
        t4 = time.perf_counter()
        times = StepTimes(generate_s=t1 - t0, score_s=t2 - t1, learn_s=t3 - t2, sync_s=t4 - t3, total_s=t4 - t0,
                          completion_tokens=sum(r.length for r in batch), samples=len(batch))
        return times, metrics

    def close(self) -> None:
        import ray

        for actor in self.rollouts.actors + self.learners.actors:
            ray.kill(actor)
