import pytest
import torch

from rlkit.algo import kimi_length_reward, overlong_filter_mask, overlong_penalty


def test_kimi_length_reward_by_hand():
    # group 1: lengths [100, 200, 300, 500], min 100, max 500, span 400
    #   lambda = 0.5 - [0, 100, 200, 400] / 400 = [0.5, 0.25, 0.0, -0.5]
    #   correct [F, T, T, F] -> [min(0, 0.5) = 0, 0.25, 0.0, min(0, -0.5) = -0.5]
    # group 2: all lengths 50 -> max == min -> all zero
    r = kimi_length_reward(
        [100, 200, 300, 500, 50, 50, 50, 50],
        [False, True, True, False, True, False, True, False],
        group_size=4,
    )
    assert torch.allclose(r, torch.tensor([0.0, 0.25, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0]))


def test_kimi_length_reward_correct_gets_positive_lambda():
    # lengths [10, 30]: lambda = [0.5 - 0, 0.5 - 1] = [0.5, -0.5]; both correct
    r = kimi_length_reward(torch.tensor([10, 30]), torch.tensor([True, True]), 2)
    assert r.tolist() == [0.5, -0.5]


def test_kimi_length_reward_checks_group_size():
    with pytest.raises(ValueError, match="N=3.*group_size=2"):
        kimi_length_reward([1, 2, 3], [True] * 3, 2)


def test_overlong_penalty_boundaries():
    # max_len 100, cache 20 -> buffer starts after 80
    # 50 -> 0; 80 -> 0 (last free length); 81 -> (80-81)/20 = -0.05; 90 -> -10/20 = -0.5;
    # 100 -> -20/20 = -1; 101 -> beyond max_len -> -1; 1000 -> -1
    p = overlong_penalty([50, 80, 81, 90, 100, 101, 1000], max_len=100, cache_len=20)
    assert torch.allclose(p, torch.tensor([0.0, 0.0, -0.05, -0.5, -1.0, -1.0, -1.0]))


def test_overlong_penalty_without_buffer_is_a_step():
    # cache 0: 0 up to max_len, -1 after
    assert overlong_penalty([100, 101], max_len=100, cache_len=0).tolist() == [0.0, -1.0]


def test_overlong_penalty_validates_cache_len():
    with pytest.raises(ValueError, match="cache_len must be in \\[0, max_len=100\\], got 120"):
        overlong_penalty([1], max_len=100, cache_len=120)


def test_overlong_filter_mask():
    # truncated samples leave the loss
    assert overlong_filter_mask(torch.tensor([True, False, False])).tolist() == [0.0, 1.0, 1.0]
