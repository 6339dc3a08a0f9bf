"""sandbox.judge.run_tests on honest solutions: every test format and the Python
semantics a test may rely on."""

from __future__ import annotations

import time

import pytest

from sandbox.judge import run_tests, stdout_matches

from .conftest import needs_bwrap

ADD = "def add(a, b):\n    return a + b\n"


def statuses(report):
    return [o.status for o in report.outcomes]


@needs_bwrap
def test_assert_tests_pass_and_fail_individually():
    # 1+2 is 3 (pass); 2+2 is 4, not 5 (fail); 'a'+'b' is 'ab' (pass): 2 of 3.
    report = run_tests(ADD, ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add('a', 'b') == 'ab'"])
    assert statuses(report) == ["pass", "fail", "pass"]
    assert report.fraction == pytest.approx(2 / 3)
    assert report.outcomes[1].detail.startswith("AssertionError")


@needs_bwrap
def test_call_tests_compare_returned_values_here():
    # add(1, 2) = 3 matches; add(3, 4) = 7 is not the 8 expected.
    report = run_tests(ADD, {"inputs": [[1, 2], [3, 4]], "outputs": [3, 8], "fn_name": "add"})
    assert statuses(report) == ["pass", "fail"] and report.outcomes[1].detail == "returned 7"


@needs_bwrap
def test_call_tests_accept_apps_style_wrapped_outputs_and_tuples_as_lists():
    sol = "def pair(n):\n    return (n, n + 1)\n"
    # Expected values come from JSON, where tuples are lists; APPS wraps them in one more list.
    report = run_tests(sol, {"inputs": [[1], [5]], "outputs": [[1, 2], [[5, 6]]], "fn_name": "pair"})
    assert statuses(report) == ["pass", "pass"]


@needs_bwrap
def test_call_tests_find_leetcode_style_methods():
    sol = "class Solution:\n    def double(self, x):\n        return 2 * x\n"
    report = run_tests(sol, {"inputs": [[21]], "outputs": [42], "fn_name": "double"})
    assert statuses(report) == ["pass"]


@needs_bwrap
def test_stdio_tests_feed_stdin_and_compare_stdout_here():
    sol = "a, b = map(int, input().split())\nprint(a + b)\n"
    report = run_tests(sol, {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "8\n"]})
    # 1+2 prints 3 (pass); 3+4 prints 7, not 8 (fail).
    assert statuses(report) == ["pass", "fail"] and report.outcomes[1].detail == "printed '7\\n'"


@needs_bwrap
def test_stdio_solution_may_read_all_of_stdin_and_exit_early():
    sol = "import sys\nnums = sys.stdin.read().split()\nprint(sum(map(int, nums)))\nsys.exit(0)\nprint('unreached')\n"
    report = run_tests(sol, {"inputs": ["1\n2\n3\n"], "outputs": ["6"]})
    assert statuses(report) == ["pass"]


@needs_bwrap
def test_humaneval_check_function_and_module_globals():
    sol = "import math\ndef inc(x):\n    return x + 1\n"
    tests = ["def check(candidate):\n    assert candidate(1) == 2\n    assert abs(candidate(0.5) - 1.5) < 1e-9\n"
             "check(inc)",
             "def uses_global():\n    assert inc(2) == 3\nuses_global()",
             # `math` was imported by the solution; the test gets the harness's own copy.
             "assert math.isclose(inc(math.pi), math.pi + 1)"]
    assert statuses(run_tests(sol, tests)) == ["pass", "pass", "pass"]


@needs_bwrap
def test_generators_exceptions_and_in_place_changes_behave_like_python():
    sol = ("def gen(n):\n    yield from range(n)\n"
           "def div(a, b):\n    return a // b\n"
           "def sort_in_place(xs):\n    xs.sort()\n")
    tests = [
        "assert list(gen(3)) == [0, 1, 2]",
        "assert 2 in gen(3)",
        "assert gen(3) != [0, 1, 2]",  # a generator is not a list, in Python too
        "try:\n    div(1, 0)\n    raise AssertionError('no error')\nexcept ZeroDivisionError:\n    pass",
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
    ]
    assert statuses(run_tests(sol, tests)) == ["pass"] * 5


@needs_bwrap
def test_data_subclasses_and_objects_with_str():
    sol = ("from collections import Counter, namedtuple\nP = namedtuple('P', 'x y')\n"
           "def point():\n    return P(1, 2)\n"
           "def count(s):\n    return Counter(s)\n"
           "class Named:\n    def __str__(self):\n        return 'named'\n"
           "def named():\n    return Named()\n")
    tests = ["assert point() == (1, 2)", "assert count('aab') == {'a': 2, 'b': 1}", "assert str(named()) == 'named'"]
    assert statuses(run_tests(sol, tests)) == ["pass"] * 3


@needs_bwrap
def test_solution_is_a_real_module_for_dataclasses_and_pickle():
    sol = ("from __future__ import annotations\nfrom dataclasses import dataclass\nimport pickle\n"
           "@dataclass\nclass P:\n    x: int\n"
           "def roundtrip(v):\n    return pickle.loads(pickle.dumps(P(v))).x\n")
    assert statuses(run_tests(sol, ["assert roundtrip(3) == 3"])) == ["pass"]


@needs_bwrap
def test_solution_output_and_debug_prints_do_not_disturb_the_channel():
    sol = "print('debug: loading', flush=True)\ndef add(a, b):\n    print('adding', a, b)\n    return a + b\n"
    assert statuses(run_tests(sol, ["assert add(1, 2) == 3"])) == ["pass"]


@needs_bwrap
def test_a_hanging_test_times_out_and_the_next_one_gets_a_fresh_worker():
    sol = "def f(x):\n    while x == 0:\n        pass\n    return x\n"
    start = time.monotonic()
    report = run_tests(sol, ["assert f(0) == 0", "assert f(1) == 1"], timeout_s=0.5)
    assert statuses(report) == ["timeout", "pass"] and report.timeouts == 1
    assert time.monotonic() - start < 5


@needs_bwrap
def test_module_code_that_hangs_times_out_once_for_all_tests():
    # One load timeout (0.5 s) fails every test: three tests do not cost three timeouts.
    start = time.monotonic()
    report = run_tests("while True:\n    pass\n", ["assert 1", "assert 2", "assert 3"], timeout_s=0.5)
    assert statuses(report) == ["timeout"] * 3
    assert time.monotonic() - start < 4


@needs_bwrap
def test_stop_on_failure_skips_the_rest():
    report = run_tests(ADD, ["assert add(1, 1) == 3", "assert add(1, 2) == 3"], stop_on_failure=True)
    assert statuses(report) == ["fail", "skipped"]


@needs_bwrap
def test_stdio_timeout_per_input():
    sol = "n = int(input())\nwhile n == 0:\n    pass\nprint(n)\n"
    report = run_tests(sol, {"inputs": ["0\n", "5\n"], "outputs": ["0", "5"]}, timeout_s=0.5)
    assert statuses(report) == ["timeout", "pass"]


def test_stdout_comparison_rules():
    assert stdout_matches("3\n", "3")  # trailing newline
    assert stdout_matches("1 2  \n3\n\n", "1 2\n3")  # trailing spaces and blank lines
    assert stdout_matches("1\n2\n", "1 2")  # same tokens, other layout
    assert stdout_matches("0.3333333\n", "0.333333333")  # within 1e-6
    assert not stdout_matches("0.34\n", "0.333333")  # off by 7e-3
    assert not stdout_matches("3.0\n", "3")  # integers are compared exactly
    assert not stdout_matches("3\n4\n", "3")


def test_malformed_tests_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        run_tests(ADD, {"inputs": ["1", "2"], "outputs": ["1"]})
    with pytest.raises(TypeError, match="input 0 of a call test must be an argument list"):
        run_tests(ADD, {"inputs": [5], "outputs": [5], "fn_name": "add"})
    with pytest.raises(TypeError, match="list of Python source strings"):
        run_tests(ADD, [1, 2])
