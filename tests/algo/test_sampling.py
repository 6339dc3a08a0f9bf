import io

import pytest
import torch

from rlkit.algo import (
    CurriculumSampler,
    DynamicSamplingBuffer,
    PrioritizedSampler,
    curriculum_order,
    dynamic_sampling_mask,
)

# ----------------------------------------------------------------- dynamic sampling


def test_dynamic_sampling_mask():
    # groups of 2: [1, 1] all right, [0, 1] mixed, [0, 0] all wrong
    assert dynamic_sampling_mask([1.0, 1.0, 0.0, 1.0, 0.0, 0.0], 2).tolist() == [False, True, False]


def test_dynamic_sampling_mask_atol():
    # spread 0.05: informative with atol 0, equal with atol 0.1
    assert dynamic_sampling_mask([0.5, 0.55], 2).tolist() == [True]
    assert dynamic_sampling_mask([0.5, 0.55], 2, atol=0.1).tolist() == [False]


def test_buffer_collects_informative_groups_until_full():
    buf = DynamicSamplingBuffer(target_groups=2)
    # round 1: groups [a0 a1] all right (drop), [b0 b1] mixed (keep), [c0 c1] all wrong (drop)
    assert not buf.add(["a0", "a1", "b0", "b1", "c0", "c1"], [1, 1, 1, 0, 0, 0], group_size=2)
    assert len(buf) == 1 and buf.metrics()["kept_groups"] == 1.0 and buf.metrics()["dropped_groups"] == 2.0
    # round 2: [d0 d1] and [e0 e1] both mixed -> 3 kept, full; e is surplus
    assert buf.add(["d0", "d1", "e0", "e1"], torch.tensor([0.0, 1.0, 1.0, 0.0]), group_size=2)
    items, rewards = buf.take()
    assert items == ["b0", "b1", "d0", "d1"]
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    # kept 3 of 5 groups seen over 2 rounds, 1 surplus dropped at take()
    assert buf.last_metrics == {
        "kept_groups": 3.0,
        "dropped_groups": 2.0,
        "rounds": 2.0,
        "kept_frac": 0.6,
        "surplus_groups": 1.0,
    }
    assert len(buf) == 0 and buf.rounds == 0


def test_buffer_take_before_full():
    buf = DynamicSamplingBuffer(target_groups=3)
    buf.add([0, 1], [0.0, 1.0], group_size=2)
    with pytest.raises(RuntimeError, match="holds 1 of 3 groups"):
        buf.take()
    items, rewards = buf.take(allow_partial=True)
    assert items == [0, 1] and rewards.tolist() == [0.0, 1.0]


def test_buffer_checks_item_count():
    with pytest.raises(ValueError, match="3 items but 2 rewards"):
        DynamicSamplingBuffer(1).add([1, 2, 3], [0.0, 1.0], group_size=2)


# ----------------------------------------------------------------- prioritised sampling


def test_prioritized_weights_by_hand():
    s = PrioritizedSampler(4, ema=None, floor=0.05)
    s.update([0, 1, 1, 1], [1.0, 1.0, 0.0, 0.5])
    # p0: s = 1 -> max(0, 0.05) = 0.05; p1 running mean (1 + 0 + 0.5)/3 = 0.5 -> 0.5; unseen -> 1
    assert torch.allclose(s.weights(), torch.tensor([0.05, 0.5, 1.0, 1.0], dtype=torch.float64))


def test_prioritized_ema_update():
    s = PrioritizedSampler(2, ema=0.5)
    s.update([0], [1.0])  # first observation sets s0 = 1
    s.update([0], [0.0])  # 0.5 * 1 + 0.5 * 0 = 0.5
    s.update([0], [1.0])  # 0.5 * 0.5 + 0.5 * 1 = 0.75
    assert s.success[0].item() == 0.75 and s.counts[0].item() == 3
    assert s.weights()[0].item() == 0.25


def test_prioritized_draws_follow_weights():
    # weights [0.05, 1, 1, 1] -> P(first draw = 0) = 0.05 / 3.05 = 0.0164; 3000 draws -> about 49
    s = PrioritizedSampler(4, seed=3)
    s.update([0], [1.0])
    draws = [s.sample(1)[0] for _ in range(3000)]
    assert 15 < draws.count(0) < 100
    assert all(400 < draws.count(i) < 1600 for i in (1, 2, 3))


def test_prioritized_sample_is_without_replacement():
    s = PrioritizedSampler(10, seed=0)
    draw = s.sample(10)
    assert sorted(draw) == list(range(10))
    with pytest.raises(ValueError, match="k=11 distinct problems out of 10"):
        s.sample(11)


def test_prioritized_state_round_trip_continues_exactly():
    a = PrioritizedSampler(50, seed=7)
    a.update(range(20), [i / 20 for i in range(20)])
    a.sample(5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    expected = [a.sample(8) for _ in range(3)]

    b = PrioritizedSampler(50, seed=999)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    assert [b.sample(8) for _ in range(3)] == expected
    assert torch.equal(a.success, b.success)


def test_prioritized_validates_inputs():
    s = PrioritizedSampler(3)
    with pytest.raises(ValueError, match="problem ids must be in \\[0, 3\\)"):
        s.update([3], [0.5])
    with pytest.raises(ValueError, match="success rates must be in \\[0, 1\\]"):
        s.update([0], [1.5])
    with pytest.raises(ValueError, match="num_problems=3, this sampler has 4"):
        PrioritizedSampler(4).load_state_dict(s.state_dict())


# ----------------------------------------------------------------- curriculum


def test_curriculum_order_is_stable():
    # difficulties [0.3, 0.1, 0.3, 0.2]: easy first -> 1 (0.1), 3 (0.2), then the two 0.3 in index order
    assert curriculum_order([0.3, 0.1, 0.3, 0.2]) == [1, 3, 0, 2]
    # hard first keeps ties in index order too
    assert curriculum_order([0.3, 0.1, 0.3, 0.2], ascending=False) == [0, 2, 3, 1]


def test_curriculum_order_rejects_nan():
    with pytest.raises(ValueError, match="NaN at indices \\[1\\]"):
        curriculum_order([0.1, float("nan")])


def test_curriculum_sampler_walks_and_wraps():
    # distinct difficulties -> order [1, 0, 2]
    s = CurriculumSampler([0.5, 0.1, 0.9], seed=0)
    assert s.sample(2) == [1, 0]
    assert s.sample(2) == [2, 1] and s.epoch == 1


def test_curriculum_sampler_ties_stay_between_easier_and_harder():
    diffs = [1.0, 0.0, 0.5, 0.5, 0.5, 0.5, 2.0]
    order = CurriculumSampler(diffs, seed=4).sample(7)
    assert order[0] == 1 and order[-1] == 6 and order[1:6] == sorted(order[1:6], key=lambda i: diffs[i])
    assert set(order[1:5]) == {2, 3, 4, 5}


def test_curriculum_sampler_state_round_trip():
    diffs = torch.rand(20, generator=torch.Generator().manual_seed(0))
    a = CurriculumSampler(diffs, seed=1)
    a.sample(13)
    state = a.state_dict()
    expected = [a.sample(6) for _ in range(3)]
    b = CurriculumSampler(diffs, seed=1)
    b.load_state_dict(state)
    assert [b.sample(6) for _ in range(3)] == expected
    with pytest.raises(ValueError, match="checkpoint is for"):
        CurriculumSampler(diffs, seed=2).load_state_dict(state)
