"""Group-relative estimators refuse one sample per prompt: every advantage would be 0 and nothing would train."""

from __future__ import annotations

import pytest

from rlkit.algo import ADVANTAGE_ESTIMATORS, group_advantages
from rlkit.algo.advantages import check_group_size


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_group_size_one_is_refused_naming_the_setting(estimator):
    assert estimator in ADVANTAGE_ESTIMATORS
    with pytest.raises(ValueError, match=rf"{estimator} needs group_size >= 2.*rollout.group_size"):
        group_advantages([1.0, 0.0, 1.0], 1, estimator=estimator)
    with pytest.raises(ValueError, match="group_size=0"):
        check_group_size(0, estimator)


def test_two_samples_per_prompt_train():
    # G = 2, rewards (1, 0): dr_grpo gives r - mean = (0.5, -0.5); nothing is refused
    assert group_advantages([1.0, 0.0], 2, estimator="dr_grpo").tolist() == [0.5, -0.5]
    check_group_size(2)
