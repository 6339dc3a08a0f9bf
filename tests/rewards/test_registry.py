import os
import pickle
import subprocess
import sys

import pytest

import rewards
from rewards.format import tag_count_reward, think_format_reward
from rewards.registry import RewardRegistry

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
MY_REWARD_FILE = os.path.join(FIXTURES, "my_reward.py")


def test_import_rewards_pulls_in_no_heavy_dependency():
    code = (
        "import sys, rewards; "
        "print(sorted(m for m in ('torch', 'ray', 'vllm', 'sympy', 'rewards.math', 'rewards.code') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_builtins_are_listed_before_their_modules_are_imported():
    builtins = {
        "code_unit_tests",
        "language_consistency",
        "math_accuracy",
        "repetition",
        "tag_count",
        "think_format",
    }
    # A subset: importing a built-in module may register further names.
    assert builtins <= set(rewards.available())


def test_get_registered_name_resolves_the_lazy_entry():
    assert rewards.get("think_format") is think_format_reward
    assert rewards.get("tag_count") is tag_count_reward


def test_unknown_name_lists_registered_names():
    with pytest.raises(KeyError) as caught:
        rewards.get("thinkformat")
    assert str(caught.value).startswith(
        "unknown reward 'thinkformat'; registered rewards: code_unit_tests, language_consistency, "
        "math_accuracy, repetition, tag_count, think_format."
    )


def test_register_and_get():
    registry = RewardRegistry()

    @registry.register("length")
    def length(completions, **columns):
        return [float(len(c)) for c in completions]

    assert registry.get("length") is length
    assert registry.available() == ["length"]


def test_duplicate_name_is_an_error_naming_it():
    registry = RewardRegistry()
    registry.register("length")(lambda completions, **kw: [0.0] * len(completions))
    with pytest.raises(ValueError, match="'length' is already registered"):
        registry.register("length")(lambda completions, **kw: [1.0] * len(completions))


def test_registering_the_function_a_lazy_entry_points_at_fulfils_it():
    # What happens when a built-in module decorates its own function.
    registry = RewardRegistry({"tags": "rewards.format:tag_count_reward"})
    registry.register("tags")(tag_count_reward)
    assert registry.get("tags") is tag_count_reward
    with pytest.raises(ValueError, match="'tags' is already registered"):
        registry.register("tags")(think_format_reward)


def test_bad_name_is_rejected():
    with pytest.raises(ValueError, match="without ':'"):
        RewardRegistry().register("file.py:f")


def test_lazy_entry_to_missing_module_names_the_reward_spec():
    registry = RewardRegistry({"ghost": "rewards.not_written_yet:score"})
    assert registry.available() == ["ghost"]  # listing does not import
    with pytest.raises(ModuleNotFoundError, match="rewards.not_written_yet:score"):
        registry.get("ghost")


def test_module_spec():
    assert rewards.get("rewards.format:tag_count_reward") is tag_count_reward


def test_module_spec_missing_function_lists_what_is_there():
    with pytest.raises(AttributeError, match="no function 'tag_counts'.*tag_count_reward"):
        rewards.get("rewards.format:tag_counts")


def test_file_spec_loads_and_runs():
    my_reward = rewards.get(f"{MY_REWARD_FILE}:my_reward")
    # len("short") = 5 < 10 -> 1.0; len("a long completion") = 17 >= 10 -> 0.0
    assert my_reward(["short", "a long completion"]) == [1.0, 0.0]


def test_file_spec_relative_to_current_directory(monkeypatch):
    monkeypatch.chdir(os.path.dirname(FIXTURES))
    assert rewards.get("fixtures/my_reward.py:other_reward")(["x"]) == [0.0]


def test_same_file_is_loaded_once():
    registry = RewardRegistry()
    first = registry.get(f"{MY_REWARD_FILE}:my_reward")
    assert registry.get(f"{MY_REWARD_FILE}:my_reward") is first


def test_file_not_found():
    with pytest.raises(FileNotFoundError, match="'no/such/rewards.py' not found"):
        rewards.get("no/such/rewards.py:my_reward")


def test_function_not_in_file_lists_what_is():
    with pytest.raises(AttributeError, match="no function 'my_rewrd'.*my_reward, other_reward"):
        rewards.get(f"{MY_REWARD_FILE}:my_rewrd")


def test_not_callable():
    with pytest.raises(TypeError, match="THRESHOLD' is not callable: it is a int"):
        rewards.get(f"{MY_REWARD_FILE}:THRESHOLD")


def test_reward_from_file_pickles_by_value_for_remote_workers():
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    my_reward = RewardRegistry().get(f"{MY_REWARD_FILE}:my_reward")
    copy = pickle.loads(cloudpickle.dumps(my_reward))
    # By reference would hand back the very same object; by value rebuilds it.
    assert copy is not my_reward
    assert copy(["short", "a long completion"]) == [1.0, 0.0]
