"""Group-relative advantage estimators (one scalar per sampled output).

Every estimator sees a group of G outputs sampled for the same prompt and
turns their rewards into advantages relative to the group; the learner then
gives that value to every token of the output.

- ``grpo``    DeepSeekMath (arXiv:2402.03300): A_i = (r_i - mean(r)) / (std(r) + eps).
              std is the Bessel-corrected (sample) std, sqrt(sum (r - mean)^2 / (G - 1)),
              matching ``torch.std``'s default and common GRPO implementations.
- ``dr_grpo`` Dr. GRPO (arXiv:2503.20783): A_i = r_i - mean(r). Dropping the std
              removes the bias towards questions that are almost always right or
              always wrong. Also Kimi k1.5's baseline (arXiv:2501.12599).
- ``rloo``    leave-one-out: A_i = r_i - mean_{j != i}(r_j) = (r_i - mean(r)) * G / (G - 1).

Every one of them needs G >= 2: a lone sample is its own baseline, so its advantage is 0
and nothing would train (``check_group_size`` says so before any sampling starts).

New estimators register in ``ADVANTAGE_ESTIMATORS`` with the signature
``fn(grouped: Tensor[B, G], *, eps: float) -> Tensor[B, G]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rlkit.registry import Registry

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")


def as_groups(values: Tensor | Sequence[float], group_size: int, *, name: str = "rewards") -> Tensor:
    """Reshape a flat per-sample tensor into contiguous groups: [N] -> [N // G, G]."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    values = torch.as_tensor(values)
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(values.shape)}")
    n = values.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"number of {name} N={n} is not divisible by group_size={group_size}; "
            "groups must be contiguous blocks of group_size samples"
        )
    return values.reshape(n // group_size, group_size)  # [B, G]


def check_group_size(group_size: int, estimator: str = "grpo") -> None:
    """Refuse G < 2 for a group-relative estimator, naming the setting to change."""
    if group_size < 2:
        raise ValueError(
            f"{estimator} needs group_size >= 2: its baseline is the other samples of the same prompt, so with "
            f"group_size={group_size} every advantage is 0 and nothing trains (set rollout.group_size to 2 or more)"
        )


@ADVANTAGE_ESTIMATORS.register("grpo")
def _grpo(grouped: Tensor, *, eps: float) -> Tensor:
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    std = grouped.std(dim=1, keepdim=True, unbiased=True)  # [B, 1]
    return centred / (std + eps)  # [B, G]


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def _dr_grpo(grouped: Tensor, *, eps: float) -> Tensor:
    return grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]


@ADVANTAGE_ESTIMATORS.register("rloo")
def _rloo(grouped: Tensor, *, eps: float) -> Tensor:
    g = grouped.shape[1]
    total = grouped.sum(dim=1, keepdim=True)  # [B, 1]
    return grouped - (total - grouped) / (g - 1)  # [B, G]


def group_advantages(
    rewards: Tensor | Sequence[float],
    group_size: int,
    *,
    estimator: str = "grpo",
    eps: float = 1e-6,
) -> Tensor:
    """Advantages for N = B * G samples whose groups are contiguous blocks of ``group_size``.

    Args:
        rewards: [N] scalar reward per sample (tensor or list).
        group_size: G, the number of samples per prompt.
        estimator: a name in ``ADVANTAGE_ESTIMATORS`` ("grpo", "dr_grpo", "rloo").
        eps: added to the std by "grpo" so all-equal groups give 0, not NaN.

    Returns:
        [N] float advantages, in the input order.
    """
    fn = ADVANTAGE_ESTIMATORS.get(estimator)
    grouped = as_groups(rewards, group_size)  # [B, G]
    check_group_size(group_size, estimator)
    if not grouped.is_floating_point():
        grouped = grouped.float()
    return fn(grouped, eps=eps).reshape(-1)  # [N]


__all__ = ["ADVANTAGE_ESTIMATORS", "as_groups", "check_group_size", "group_advantages"]
