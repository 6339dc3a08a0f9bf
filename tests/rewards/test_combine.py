import functools

import pytest

from rewards import RewardError, combine


def constant(name, values):
    """A reward called `name` that returns `values` whatever the completions."""

    def reward(completions, **columns):
        return list(values)

    reward.__name__ = name
    return reward


def test_none_is_excluded_not_zero():
    math = constant("math", [None, 0.0, 1.0])
    fmt = constant("fmt", [1.0, 1.0, 0.0])
    combined = combine([(math, 1.0), (fmt, 2.0)])
    assert combined(["a", "b", "c"]) == [
        2.0,  # math=None, fmt=1.0 -> 2*1.0 = 2.0
        2.0,  # 1*0.0 + 2*1.0 = 2.0
        1.0,  # 1*1.0 + 2*0.0 = 1.0
    ]


def test_all_none_gives_none():
    combined = combine([(constant("a", [None]), 1.0), (constant("b", [None]), 2.0)])
    assert combined(["x"]) == [None]


def test_normalize_divides_by_applicable_weights():
    math = constant("math", [1.0, None])
    fmt = constant("fmt", [0.0, 0.5])
    combined = combine([(math, 1.0), (fmt, 3.0)], normalize=True)
    assert combined(["a", "b"]) == [
        0.25,  # (1*1.0 + 3*0.0) / (1+3) = 0.25
        0.5,  # math=None: 3*0.5 / 3 = 0.5
    ]


def test_normalize_needs_positive_weights():
    with pytest.raises(ValueError, match="reward 'fmt' has weight 0"):
        combine([(constant("math", [1.0]), 1.0), (constant("fmt", [1.0]), 0.0)], normalize=True)


def test_names_from_the_registry_and_breakdown():
    combined = combine({"think_format": 1.0, "tag_count": 0.5})
    scores = combined.score(["<think>a</think><answer>b</answer>", "<answer>b</answer>"])
    assert scores.per_reward == {
        "think_format": [1.0, 0.0],
        "tag_count": [1.0, 0.5],  # 4 tags once -> 1.0; 2 tags once -> 0.5
    }
    assert scores.total == [
        1.5,  # 1*1.0 + 0.5*1.0
        0.25,  # 1*0.0 + 0.5*0.5
    ]
    assert scores.means() == {"think_format": 0.5, "tag_count": 0.75}


def test_means_skip_samples_a_reward_does_not_apply_to():
    scores = combine([(constant("math", [None, 1.0, 0.0]), 1.0), (constant("x", [None] * 3), 1.0)]).score(
        ["a", "b", "c"]
    )
    assert scores.means() == {"math": 0.5, "x": None}  # (1.0 + 0.0) / 2; x applies nowhere


def test_columns_reach_every_reward():
    def matches(completions, answer, **columns):
        return [float(c == a) for c, a in zip(completions, answer)]

    def has_prompt(completions, prompts, **columns):
        return [float(bool(p)) for p in prompts]

    combined = combine([(matches, 1.0), (has_prompt, 0.5)])
    # "4" == "4" -> 1.0, "5" != "4" -> 0.0; both prompts non-empty -> +0.5
    assert combined(["4", "5"], answer=["4", "4"], prompts=["2+2?", "2+2?"]) == [1.5, 0.5]


def test_trainer_facing_name():
    combined = combine({"think_format": 1.0, "tag_count": 0.5})
    assert combined.__name__ == "think_format+tag_count"
    assert combined.weights == {"think_format": 1.0, "tag_count": 0.5}


def test_partial_is_named_after_its_function():
    def scaled(completions, factor, **columns):
        return [factor] * len(completions)

    combined = combine([(functools.partial(scaled, factor=0.5), 2.0)])
    assert combined.score(["a"]).per_reward == {"scaled": [0.5]}


def test_wrong_length_names_the_reward():
    combined = combine([(constant("short", [1.0]), 1.0)])
    with pytest.raises(RewardError, match="reward 'short' returned 1 values for 2 completions"):
        combined(["a", "b"])


@pytest.mark.parametrize("bad", ["1.0", float("nan"), float("inf"), [1.0]])
def test_non_number_names_the_reward_and_sample(bad):
    combined = combine([(constant("sloppy", [0.0, bad]), 1.0)])
    with pytest.raises(RewardError, match="reward 'sloppy' returned .* for sample 1"):
        combined(["a", "b"])


def test_scalar_instead_of_list_names_the_reward():
    def scalar(completions, **columns):
        return 1.0

    with pytest.raises(RewardError, match="reward 'scalar' returned float, expected a list of 1 values"):
        combine([(scalar, 1.0)])(["a"])


def test_raising_reward_propagates_with_its_name():
    def broken(completions, **columns):
        raise ZeroDivisionError("division by zero")

    with pytest.raises(RewardError, match="reward 'broken' raised ZeroDivisionError: division by zero") as caught:
        combine([(broken, 1.0)])(["a"])
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_unknown_name_in_combine():
    with pytest.raises(KeyError, match="unknown reward 'formatt'"):
        combine({"formatt": 1.0})


def test_same_reward_twice_is_an_error():
    with pytest.raises(ValueError, match="reward 'think_format' appears twice"):
        combine([("think_format", 1.0), ("think_format", 2.0)])


@pytest.mark.parametrize("weight", ["1", None, True, float("nan")])
def test_bad_weight_names_the_reward(weight):
    with pytest.raises(TypeError, match="weight of reward 'think_format' must be a finite number"):
        combine({"think_format": weight})


def test_empty_spec():
    with pytest.raises(ValueError, match="at least one"):
        combine({})
