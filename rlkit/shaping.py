"""Length control on the driver: Kimi length reward, DAPO soft overlong punishment, overlong filter.

The formulas are in `rlkit.algo.length`; this module applies them to scored rollouts as the
config says, and reports what it did.
"""

from __future__ import annotations

import torch

from rlkit.algo import kimi_length_reward, overlong_filter_mask, overlong_penalty
from rlkit.config import ShapingConfig
from rlkit.rollout.partial import apply_repeat_penalty
from rlkit.types import Rollout, TrainBatch


def shape_rewards(rollouts: list[Rollout], cfg: ShapingConfig, *, step: int, group_size: int,
                  max_new_tokens: int) -> dict[str, float]:
    """Add the configured length terms to `rollout.reward` (groups are contiguous)."""
    metrics: dict[str, float] = {}
    lengths = torch.tensor([r.length for r in rollouts], dtype=torch.float32)  # [N]
    if cfg.kimi_length_coef > 0 and step >= cfg.kimi_length_warmup:
        correct = torch.tensor([bool(r.meta.get("correct", False)) for r in rollouts])  # [N]
        bonus = kimi_length_reward(lengths, correct, group_size) * cfg.kimi_length_coef  # [N]
        for r, b in zip(rollouts, bonus.tolist()):
            r.reward += b
        metrics["shaping/kimi_length_mean"] = float(bonus.mean())
    if cfg.overlong_buffer > 0:
        budget = cfg.overlong_max or max_new_tokens
        penalty = overlong_penalty(lengths, budget, cfg.overlong_buffer) * cfg.overlong_coef  # [N]
        for r, p in zip(rollouts, penalty.tolist()):
            r.reward += p
        metrics["shaping/overlong_penalty_mean"] = float(penalty.mean())
    if cfg.repeat_penalty != 0:
        metrics.update(apply_repeat_penalty(rollouts, cfg.repeat_penalty))
    return metrics


def filter_overlong(batch: TrainBatch, rollouts: list[Rollout]) -> tuple[TrainBatch, dict[str, float]]:
    """Mask truncated samples out of the loss (DAPO overlong filtering)."""
    keep = overlong_filter_mask(torch.tensor([r.truncated for r in rollouts]))  # [N]
    batch.loss_mask = batch.loss_mask * keep.unsqueeze(1)
    return batch, {"shaping/overlong_filtered": float((keep == 0).float().mean())}
