"""Rewards and advantages for a batch of rollouts, on the driver.

The reward functions follow the contract in `rewards` (TRL-compatible); the advantages come
from `rlkit.algo`. A sample whose total reward is None (no reward applies) scores 0.0 and is
counted in `reward/not_applicable`, so it is visible rather than silently dropped; each
reward's own None count is `reward/none/<name>`. Reward models and judges named in the config's
`reward.models` run in Ray actors (`rewards.model`, `rewards.judge`), checked here before any actor
starts.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

import torch

import rewards
from rlkit.algo import group_advantages
from rlkit.data import Problem, completion_texts, reward_columns
from rlkit.types import Rollout

# Metrics that add up over the rounds of a step (the others are per-sample means).
SUMMED_METRICS = ("time/", "reward/not_applicable", "reward/none/", "reward/verifier_timeouts",
                  "reward/code_harness_errors", "reward/code_bad_tests")


def is_summed(key: str) -> bool:
    return key.startswith(SUMMED_METRICS)


class Scorer:
    def __init__(self, weights: Mapping[Any, float], accuracy: str, *, models: Mapping[str, Any] | None = None,
                 overlap_chunks: int = 1) -> None:
        if not weights:
            raise ValueError("reward.weights is empty: nothing would score the samples")
        models = dict(models or {})
        for name in models:
            if name not in weights:
                raise ValueError(f"reward model {name!r} has no weight: add it to reward.weights")
        self.reward_models = {name: _reward_model(name, spec) for name, spec in models.items()}
        parts = [(self.reward_models.get(name, name) if isinstance(name, str) else name, w)
                 for name, w in weights.items()]
        self.reward = rewards.combine(parts)
        self.accuracy = accuracy if accuracy in self.reward.weights else None
        self.overlap_chunks = max(1, overlap_chunks)

    @classmethod
    def from_config(cls, cfg) -> "Scorer":
        """From a `rlkit.config.RewardConfig`."""
        return cls(cfg.weights, cfg.accuracy, models=cfg.models, overlap_chunks=cfg.overlap_chunks)

    def score(self, rollouts: list[Rollout], problems: list[Problem], group_size: int) -> dict[str, float]:
        """Set `rollout.reward` (samples of problem i are rollouts[i*G:(i+1)*G]); return reward metrics."""
        start = time.perf_counter()
        columns = reward_columns(problems, group_size)
        scores = self.reward.score(completion_texts(rollouts, problems, group_size), **columns)
        not_applicable = 0
        for r, total in zip(rollouts, scores.total):
            if total is None:
                not_applicable += 1
            r.reward = 0.0 if total is None else float(total)
        metrics = {"reward/mean": sum(r.reward for r in rollouts) / len(rollouts),
                   "reward/not_applicable": float(not_applicable), "time/reward_s": time.perf_counter() - start}
        for name, mean in scores.means().items():
            if mean is not None:
                metrics[f"reward/{name}"] = mean
        for name, values in scores.per_reward.items():
            metrics[f"reward/none/{name}"] = float(sum(v is None for v in values))
        metrics.update(verifier_counts())
        if self.accuracy is not None:
            values = [1.0 if v and v > 0.5 else 0.0 for v in scores.per_reward[self.accuracy]]
            for r, v in zip(rollouts, values):
                r.meta["correct"] = bool(v)
        return metrics

    def close(self) -> None:
        for model in self.reward_models.values():
            model.close()


def _reward_model(name: str, spec: Any):
    """A reward function for one `reward.models` entry: a classifier reward model or a judge."""
    from rewards.judge import DEFAULT_TEMPLATE, judge
    from rewards.model import reward_model

    options = asdict(spec) if is_dataclass(spec) else dict(spec)
    path = options.pop("path", "")
    kind = options.pop("kind", "classifier")
    if kind == "judge":
        for key in ("batch_size", "max_length", "normalize"):  # a classifier's settings
            options.pop(key, None)
        options["template"] = options.get("template") or DEFAULT_TEMPLATE
        return judge(path, name=name, **options)
    for key in ("engine", "template", "verdicts", "max_new_tokens"):  # a judge's settings
        options.pop(key, None)
    return reward_model(path, name=name, **options)


def assign_advantages(rollouts: list[Rollout], group_size: int, estimator: str) -> dict[str, float]:
    rewards_t = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)  # [N]
    adv = group_advantages(rewards_t, group_size, estimator=estimator)  # [N]
    for r, a in zip(rollouts, adv.tolist()):
        r.advantage = a
    grouped = rewards_t.view(-1, group_size)  # [B, G]
    informative = (grouped.max(dim=1).values != grouped.min(dim=1).values).float()  # [B]
    return {"advantage/abs_mean": float(adv.abs().mean()), "batch/informative_groups": float(informative.mean())}


def verifier_counts() -> dict[str, float]:
    """What the built-in verifiers counted since the last call: checks that hit their time bound
    (scored 0, never a hang) and, for code, runs whose harness output was missing and samples whose
    tests could not be read (scored None)."""
    out = {"reward/verifier_timeouts": 0.0}
    math_mod = sys.modules.get("rewards.math")
    if math_mod is not None:
        out["reward/verifier_timeouts"] += math_mod.stats()["timeouts"]
        math_mod.reset_stats()
    code_mod = sys.modules.get("rewards.code")
    if code_mod is not None:
        stats = code_mod.verifier_stats(reset=True)
        out["reward/verifier_timeouts"] += stats.get("test_timeouts", 0)
        out["reward/code_harness_errors"] = float(stats.get("harness_errors", 0))
        out["reward/code_bad_tests"] = float(stats.get("bad_tests", 0))
    return out


def verifier_timeouts() -> int:
    """Checks that hit their time bound since the last call, over the built-in verifiers in use."""
    return int(verifier_counts()["reward/verifier_timeouts"])
