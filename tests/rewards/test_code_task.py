"""The shipped code task (data/tiny_code) through rewards.code: its rows are what the generator
writes, its reference answers pass their own tests in the sandbox and wrong ones do not, and
bad rows or tests that break the harness give a None or a counted failure, never an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.code import unit_test_reward, verifier_stats
from rlkit.tasks import code_functions

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "tiny_code"
needs_bwrap = pytest.mark.requires("bwrap")


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    code_functions.main(["--out", str(tmp_path), "--train", "512", "--test", "64", "--seed", "0"])
    for split in ("train", "test"):
        assert (tmp_path / f"{split}.jsonl").read_text() == (DATA / f"{split}.jsonl").read_text(), split


def test_rows_have_prompt_answer_and_assert_tests():
    rows = _rows("train")
    assert len(rows) == 512 and len(_rows("test")) == 64
    for row in rows:
        assert row["prompt"].startswith("Write a Python function ")
        assert row["answer"].startswith("```python\ndef ")
        assert len(row["tests"]) == code_functions.TESTS_PER_PROBLEM
        assert all(t.startswith("assert ") for t in row["tests"])
    assert len({r["family"] for r in rows}) == len(code_functions.FAMILIES)  # every family appears


def test_an_expected_value_checked_by_hand():
    import random

    # seed 0's first problem is a digit sum (see train.jsonl row 0): 5 + 3 + 0 + 6 = 14
    row = code_functions.make_problem(random.Random(0))
    assert row["tests"][0] == "assert sum_digits(5306) == 14"


@needs_bwrap
def test_reference_answers_pass_and_wrong_ones_fail():
    rows = _rows("test")[:16]
    tests = [r["tests"] for r in rows]
    assert unit_test_reward([r["answer"] for r in rows], tests) == [1.0] * 16
    # the reference with its body replaced: returns None, which equals no expected value
    wrong = [r["answer"].split("\n    ")[0] + "\n    return None\n```" for r in rows]
    assert unit_test_reward(wrong, tests) == [0.0] * 16


@needs_bwrap
def test_bad_rows_and_harness_breaking_tests_never_raise():
    add = "```python\ndef add(a, b):\n    return a + b\n```"
    verifier_stats(reset=True)
    scores = unit_test_reward(
        [add] * 5,
        [None,  # a row without tests: the reward does not apply
         "not json",  # unreadable: None, counted
         {"inputs": [[1, 2]], "outputs": [3, 4], "fn_name": "add"},  # 1 input, 2 outputs: None, counted
         ["import os; os._exit(3)"],  # a test that kills its process: that test fails
         ["raise SystemExit", "assert add(1, 2) == 3"]])  # one of two passes
    assert scores == [None, None, None, 0.0, 0.5]
    stats = verifier_stats()
    assert stats["bad_tests"] == 2 and stats["samples"] == 2
