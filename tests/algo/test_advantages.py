import math

import pytest
import torch

from rlkit.algo import ADVANTAGE_ESTIMATORS, group_advantages


def test_grpo_uses_bessel_std():
    # mean 0.5; Bessel std = sqrt(4 * 0.25 / 3) = 0.57735; 0.5 / 0.57735 = 0.86603
    a = group_advantages([1.0, 0.0, 0.0, 1.0], 4, estimator="grpo", eps=0.0)
    assert torch.allclose(a, torch.tensor([0.86603, -0.86603, -0.86603, 0.86603]), atol=1e-5)


def test_grpo_eps_is_added_to_std():
    # (1 - 0.5) / (0.57735 + 0.1) = 0.73818
    a = group_advantages([1.0, 0.0, 0.0, 1.0], 4, estimator="grpo", eps=0.1)
    assert a[0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 0.1), abs=1e-6)
    assert a[0].item() == pytest.approx(0.73818, abs=1e-5)


def test_dr_grpo_is_centred_reward():
    # mean 0.5 -> +-0.5
    a = group_advantages([1.0, 0.0, 0.0, 1.0], 4, estimator="dr_grpo")
    assert torch.allclose(a, torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_leave_one_out_mean():
    # r0 = 1, others [0, 0, 1] mean 1/3 -> 1 - 1/3 = 0.6667; r1 = 0, others mean 2/3 -> -0.6667
    a = group_advantages([1.0, 0.0, 0.0, 1.0], 4, estimator="rloo")
    assert torch.allclose(a, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    # equals dr_grpo * G / (G - 1) = 0.5 * 4/3
    assert torch.allclose(a, group_advantages([1.0, 0.0, 0.0, 1.0], 4, estimator="dr_grpo") * 4 / 3)


def test_groups_are_contiguous_blocks():
    # group 1 = [1, 0] -> dr_grpo +-0.5; group 2 = [3, 3] -> 0, 0
    a = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), 2, estimator="dr_grpo")
    assert torch.allclose(a, torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_all_equal_group_gives_zero_not_nan():
    # std 0: (r - mean) / (0 + eps) = 0 / eps = 0
    a = group_advantages([1.0, 1.0, 1.0], 3, estimator="grpo")
    assert torch.equal(a, torch.zeros(3))


def test_integer_rewards_become_float():
    a = group_advantages(torch.tensor([1, 0]), 2, estimator="dr_grpo")
    assert a.dtype == torch.float32 and a.tolist() == [0.5, -0.5]


def test_bad_group_size_names_both_numbers():
    with pytest.raises(ValueError, match=r"N=5.*group_size=2"):
        group_advantages([1.0] * 5, 2)


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="rloo needs group_size >= 2"):
        group_advantages([1.0, 0.0], 1, estimator="rloo")


def test_unknown_estimator_lists_choices():
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo'.*dr_grpo, grpo, rloo"):
        group_advantages([1.0, 0.0], 2, estimator="ppo")
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGE_ESTIMATORS.names())
