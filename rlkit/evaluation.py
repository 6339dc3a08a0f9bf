"""Held-out accuracy: avg@k (mean correctness over k samples per problem) and pass@k."""

from __future__ import annotations

import time
from typing import Callable

import rewards
from rlkit.data import Problem, completion_texts, reward_columns
from rlkit.types import GenerationRequest, Rollout, SamplingParams


def evaluate(generate: Callable[[list[GenerationRequest], SamplingParams], list[Rollout]],
             problems: list[Problem], *, accuracy: str, sampling: SamplingParams, k: int = 1) -> dict[str, float]:
    """`generate` is an engine's or a RolloutGroup's generate; `accuracy` a reward name or spec."""
    if not problems:
        return {}
    start = time.perf_counter()
    requests = [GenerationRequest(prompt_ids=p.prompt_ids, n=k, meta={"problem": p.index}) for p in problems]
    rollouts = generate(requests, sampling)
    scores = rewards.get(accuracy)(completion_texts(rollouts, problems, k), **reward_columns(problems, k))
    correct = [1.0 if (s is not None and s > 0.5) else 0.0 for s in scores]
    per_problem = [correct[i * k : (i + 1) * k] for i in range(len(problems))]
    return {
        "eval/accuracy": sum(correct) / len(correct),
        f"eval/pass@{k}": sum(1.0 for c in per_problem if max(c) > 0) / len(problems),
        "eval/response_length": sum(r.length for r in rollouts) / len(rollouts),
        "eval/truncated": sum(1.0 for r in rollouts if r.truncated) / len(rollouts),
        "time/eval_s": time.perf_counter() - start,
    }
