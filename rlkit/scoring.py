"""Rewards and advantages for a batch of rollouts, on the driver.

The reward functions follow the contract in `rewards` (TRL-compatible); the advantages come
from `rlkit.algo`. A sample whose total reward is None (no reward applies) scores 0.0 and is
counted in `reward/not_applicable`, so it is visible rather than silently dropped.
"""

from __future__ import annotations

import sys
import time

import torch

import rewards
from rlkit.algo import group_advantages
from rlkit.data import Problem, reward_columns
from rlkit.types import Rollout


class Scorer:
    def __init__(self, weights: dict[str, float], accuracy: str) -> None:
        if not weights:
            raise ValueError("reward.weights is empty: nothing would score the samples")
        self.reward = rewards.combine(weights)
        self.accuracy = accuracy if accuracy in self.reward.weights else None

    def score(self, rollouts: list[Rollout], problems: list[Problem], group_size: int) -> dict[str, float]:
        """Set `rollout.reward` (samples of problem i are rollouts[i*G:(i+1)*G]); return reward metrics."""
        start = time.perf_counter()
        columns = reward_columns(problems, group_size)
        scores = self.reward.score([r.text for r in rollouts], **columns)
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
        metrics["reward/verifier_timeouts"] = float(verifier_timeouts())
        if self.accuracy is not None:
            values = [1.0 if v and v > 0.5 else 0.0 for v in scores.per_reward[self.accuracy]]
            for r, v in zip(rollouts, values):
                r.meta["correct"] = bool(v)
        return metrics


def assign_advantages(rollouts: list[Rollout], group_size: int, estimator: str) -> dict[str, float]:
    rewards_t = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)  # [N]
    adv = group_advantages(rewards_t, group_size, estimator=estimator)  # [N]
    for r, a in zip(rollouts, adv.tolist()):
        r.advantage = a
    grouped = rewards_t.view(-1, group_size)  # [B, G]
    informative = (grouped.max(dim=1).values != grouped.min(dim=1).values).float()  # [B]
    return {"advantage/abs_mean": float(adv.abs().mean()), "batch/informative_groups": float(informative.mean())}


def verifier_timeouts() -> int:
    """Checks that hit their time bound since the last call (scored 0, never a hang), over the
    built-in verifiers that are in use."""
    total = 0
    math_mod = sys.modules.get("rewards.math")
    if math_mod is not None:
        total += math_mod.stats()["timeouts"]
        math_mod.reset_stats()
    code_mod = sys.modules.get("rewards.code")
    if code_mod is not None:
        total += code_mod.verifier_stats(reset=True).get("test_timeouts", 0)
    return total
