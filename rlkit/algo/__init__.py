"""GRPO-family numerics in pure torch: advantages, policy losses, KL, length shaping, sampling.

Imports torch only (no Ray, vLLM or transformers) so it can be used and tested anywhere.
Swappable pieces are registries: ``ADVANTAGE_ESTIMATORS``, ``AGGREGATIONS``,
``RATIO_LEVELS``, ``KL_ESTIMATORS``.
"""

from rlkit.algo.advantages import ADVANTAGE_ESTIMATORS, as_groups, group_advantages
from rlkit.algo.length import kimi_length_reward, overlong_filter_mask, overlong_penalty
from rlkit.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    RATIO_LEVELS,
    combine_loss_metrics,
    entropy_from_logits,
    kimi_mirror_descent_penalty,
    kl_penalty,
    loss_normalizers,
    masked_mean,
    policy_loss,
    truncated_importance_weights,
)
from rlkit.algo.sampling import (
    CurriculumSampler,
    DynamicSamplingBuffer,
    PrioritizedSampler,
    curriculum_order,
    dynamic_sampling_mask,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "RATIO_LEVELS",
    "CurriculumSampler",
    "DynamicSamplingBuffer",
    "PrioritizedSampler",
    "as_groups",
    "combine_loss_metrics",
    "curriculum_order",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "group_advantages",
    "kimi_length_reward",
    "kimi_mirror_descent_penalty",
    "kl_penalty",
    "loss_normalizers",
    "masked_mean",
    "overlong_filter_mask",
    "overlong_penalty",
    "policy_loss",
    "truncated_importance_weights",
]
