"""rewards.code: code extraction, scoring rules, batch handling, timeout counts."""

from __future__ import annotations

import json

import pytest

from rewards.code import extract_code, unit_test_reward, verifier_stats

needs_bwrap = pytest.mark.requires("bwrap")

ASSERTS = ["assert add(1, 2) == 3", "assert add(2, 3) == 5"]
CALLS = {"inputs": [[1, 2], [2, 3]], "outputs": [3, 5], "fn_name": "add"}
STDIO = {"inputs": ["1 2\n", "2 3\n"], "outputs": ["3\n", "5\n"]}
ADD = "```python\ndef add(a, b):\n    return a + b\n```"
ADD_SCRIPT = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


def test_extract_takes_the_last_python_block():
    text = ("<think>first try:\n```python\nx = 1\n```\n</think>\n"
            "Final:\n```python\nx = 2\n```\nand some shell:\n```bash\nls\n```\n")
    assert extract_code(text) == "x = 2\n"


def test_extract_accepts_untagged_and_py_blocks():
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("```py\nprint(2)\n```") == "print(2)\n"
    assert extract_code("```Python3\nprint(3)\n```") == "print(3)\n"


def test_extract_ignores_other_languages_and_unclosed_blocks():
    assert extract_code("```cpp\nint main() {}\n```") is None
    # A completion cut off mid-block (length limit) has no runnable code.
    assert extract_code("```python\ndef f():\n    return") is None
    assert extract_code("no code at all") is None


def test_tests_that_do_not_apply_give_none_without_running_anything():
    # None, an empty list and a dict without inputs: the reward does not apply.
    assert unit_test_reward([ADD, ADD, ADD], [None, [], {"inputs": [], "outputs": []}]) == [None, None, None]


def test_no_code_block_scores_zero():
    verifier_stats(reset=True)
    assert unit_test_reward(["I think the answer is 3."], [ASSERTS]) == [0.0]
    assert verifier_stats()["no_code"] == 1


def test_batch_lengths_must_match():
    with pytest.raises(ValueError, match="2 completions but 1 tests"):
        unit_test_reward([ADD, ADD], [ASSERTS])


def test_unreadable_tests_score_none_and_are_counted(caplog):
    # a plain string that is not JSON, and a number: neither is a test list; the batch goes on
    verifier_stats(reset=True)
    with caplog.at_level("WARNING", logger="rewards.code"):
        assert unit_test_reward([ADD, ADD, "no code"], ["assert add(1, 2) == 3", 42, ASSERTS]) == [None, None, 0.0]
    assert verifier_stats()["bad_tests"] == 2
    assert "sample 0" in caplog.text and "sample 1" in caplog.text  # the message names the row


def test_code_in_the_answer_tag_when_there_is_no_block():
    from rewards.code import completion_code

    assert completion_code("<think> hm </think> <answer> def f(): return 1 </answer>") == "def f(): return 1\n"
    assert completion_code("<answer> x </answer>\n```python\ny = 2\n```") == "y = 2\n"  # a block wins
    assert completion_code("<answer>  </answer>") is None


@needs_bwrap
def test_honest_solutions_score_one_in_every_format():
    scores = unit_test_reward([ADD, ADD, ADD_SCRIPT], [ASSERTS, CALLS, STDIO])
    assert scores == [1.0, 1.0, 1.0]


@needs_bwrap
def test_chat_completions_and_json_tests():
    chat = [{"role": "user", "content": "add two numbers"}, {"role": "assistant", "content": ADD}]
    assert unit_test_reward([chat, ADD], [ASSERTS, json.dumps(CALLS)]) == [1.0, 1.0]


@needs_bwrap
def test_fraction_and_all_or_nothing():
    # add(1, 2) = 3 passes; the second test expects 2+3 to be 6 and fails: 1 of 2.
    tests = ["assert add(1, 2) == 3", "assert add(2, 3) == 6"]
    assert unit_test_reward([ADD], [tests]) == [0.5]
    assert unit_test_reward([ADD], [tests], all_or_nothing=True) == [0.0]


@needs_bwrap
def test_fn_name_column_names_the_function_per_sample():
    plus = fenced("def plus(a, b):\n    return a + b")
    tests = {"inputs": [[1, 2]], "outputs": [3]}
    assert unit_test_reward([plus], [tests], fn_name=["plus"]) == [1.0]


@needs_bwrap
def test_hacks_score_zero_in_every_format():
    hacks = [
        fenced("import sys\nsys.exit(0)"),
        fenced("import os\nos._exit(0)"),
        fenced("class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\n"
               "def add(a, b):\n    return A()"),
        fenced("print('all tests passed')\ndef add(a, b):\n    return 0"),
        fenced("def add(a, b) return a + b"),
    ]
    for hack in hacks:
        assert unit_test_reward([hack] * 3, [ASSERTS, CALLS, STDIO]) == [0.0, 0.0, 0.0], hack


@needs_bwrap
def test_timeouts_are_counted_for_metrics():
    hangs = fenced("def add(a, b):\n    while True:\n        pass")
    verifier_stats(reset=True)
    assert unit_test_reward([hangs, ADD], [ASSERTS, ASSERTS], timeout_s=0.5) == [0.0, 1.0]
    stats = verifier_stats(reset=True)
    # The hanging sample times out on both tests (a fresh worker for the second);
    # the honest one passes both: 4 tests, 2 passed, 2 timeouts in 1 sample.
    assert (stats["samples"], stats["tests"], stats["tests_passed"]) == (2, 4, 2)
    assert (stats["test_timeouts"], stats["samples_with_timeout"]) == (2, 1)
    assert verifier_stats()["samples"] == 0  # reset=True cleared the counts


@needs_bwrap
def test_a_batch_runs_in_parallel_and_keeps_order():
    completions = [fenced(f"def add(a, b):\n    return a + b + {k}") for k in range(6)]
    # Only k = 0 adds correctly; the others are off by k on every test.
    assert unit_test_reward(completions, [ASSERTS] * 6, max_workers=3) == [1.0] + [0.0] * 5
