"""Length shaping: Kimi k1.5's length reward, DAPO's soft overlong punishment and overlong filtering.

The rewards here are added to the task reward (with a weight chosen by the
recipe) before advantages are computed; the filter mask multiplies the loss mask.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rlkit.algo.advantages import as_groups


def kimi_length_reward(
    lengths: Tensor | Sequence[int],
    correct: Tensor | Sequence[bool],
    group_size: int,
) -> Tensor:
    """Kimi k1.5 (arXiv:2501.12599) length reward, per contiguous group of ``group_size``.

    lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len), with min/max over the group;
    a correct answer gets lambda_i, a wrong one min(0, lambda_i), so short wrong answers
    are not rewarded for being short. A group whose lengths are all equal gets 0.

    Args:
        lengths: [N] completion lengths in tokens.
        correct: [N] whether each answer was right.
    Returns:
        [N] float rewards in [-0.5, 0.5].
    """
    lens = as_groups(torch.as_tensor(lengths, dtype=torch.float32), group_size, name="lengths")  # [B, G]
    ok = as_groups(torch.as_tensor(correct, dtype=torch.bool), group_size, name="correct flags")  # [B, G]
    lo = lens.min(dim=1, keepdim=True).values  # [B, 1]
    hi = lens.max(dim=1, keepdim=True).values  # [B, 1]
    span = hi - lo  # [B, 1]
    lam = 0.5 - (lens - lo) / span.clamp_min(1e-12)  # [B, G]
    lam = torch.where(span > 0, lam, torch.zeros_like(lam))  # [B, G]
    reward = torch.where(ok, lam, lam.clamp(max=0.0))  # [B, G]
    return reward.reshape(-1)  # [N]


def overlong_penalty(lengths: Tensor | Sequence[int], max_len: int, cache_len: int) -> Tensor:
    """DAPO (arXiv:2503.14476) soft overlong punishment, [N] -> [N].

    0 if len <= max_len - cache_len; ((max_len - cache_len) - len) / cache_len inside the
    buffer, reaching -1 at len == max_len; -1 beyond max_len. With ``cache_len == 0``
    it is a hard 0 / -1 step at max_len.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    if not 0 <= cache_len <= max_len:
        raise ValueError(f"cache_len must be in [0, max_len={max_len}], got {cache_len}")
    lens = torch.as_tensor(lengths, dtype=torch.float32)  # [N]
    if lens.dim() != 1:
        raise ValueError(f"lengths must be 1-D [N], got shape {tuple(lens.shape)}")
    if cache_len == 0:
        return torch.where(lens > max_len, -1.0, 0.0)  # [N]
    # The linear ramp is positive before the buffer and below -1 after max_len; clamping
    # to [-1, 0] gives exactly the three pieces.
    return (((max_len - cache_len) - lens) / cache_len).clamp(min=-1.0, max=0.0)  # [N]


def overlong_filter_mask(truncated: Tensor | Sequence[bool]) -> Tensor:
    """DAPO overlong filtering: [N] bool -> [N] float, 0.0 for truncated samples, 1.0 otherwise.

    Multiply it into the loss mask (``mask * f[:, None]``) so truncated samples,
    whose reward says nothing reliable about their reasoning, leave the loss.
    """
    truncated = torch.as_tensor(truncated, dtype=torch.bool)
    if truncated.dim() != 1:
        raise ValueError(f"truncated must be 1-D [N], got shape {tuple(truncated.shape)}")
    return (~truncated).float()  # [N]


__all__ = ["kimi_length_reward", "overlong_filter_mask", "overlong_penalty"]
