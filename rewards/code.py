"""Unit-test reward for code: run the completion's last Python block against the
sample's tests, in the sandbox.

    unit_test_reward(completions, tests, all_or_nothing=False) -> list[float | None]

``tests[i]`` is a list of assert statements (MBPP/HumanEval), or a dict
``{"inputs": [...], "outputs": [...]}`` for stdin/stdout tests, with
``"fn_name"`` for call tests (APPS/TACO); a JSON string of either is read too. A
``fn_name`` column, if the dataset has one, names the function for that sample.

Code is the completion's last fenced Python block, else (a completion in the
R1-Zero template) the content of its last ``<answer>...</answer>``.

Score: the fraction of tests passed, or 1.0/0.0 with ``all_or_nothing=True``;
0.0 when the completion has no code; None when the sample has no tests (the
reward does not apply) or when its tests cannot be read or run (not JSON, a
wrong type, a call test the judge rejects): such a sample is counted in
``verifier_stats()["bad_tests"]`` and logged with its index, never allowed to
crash the batch. Tests that break the harness itself (a missing or tampered
report) score 0 for that run and count as ``harness_errors``. How the solution is kept from faking a pass
(exiting early, patched builtins, an object equal to everything, printed
markers) is described in `sandbox.judge`.

Verifier timeouts are counted for the training loop's metrics:
``verifier_stats(reset=True)`` returns and clears the counts since the last reset.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from rewards._text import completion_text

# An opening fence with an optional language tag, the body, a closing fence on a
# line of its own. An unterminated block (a truncated completion) never matches.
_FENCE = re.compile(r"^ {0,3}```[ \t]*([^\s`]*)[^\n]*\n(.*?)^ {0,3}```[ \t]*$", re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})

_STAT_KEYS = ("samples", "tests", "tests_passed", "test_timeouts", "samples_with_timeout", "no_code",
              "harness_errors", "bad_tests")
log = logging.getLogger(__name__)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_stats = dict.fromkeys(_STAT_KEYS, 0)
_stats_lock = threading.Lock()


def extract_code(text: str) -> str | None:
    """The last fenced block tagged python (or untagged) in ``text``, else None."""
    last = None
    for match in _FENCE.finditer(text):
        if match.group(1).lower() in _PYTHON_TAGS:
            last = match.group(2)
    return last


def completion_code(text: str) -> str | None:
    """The code a completion gives: its last Python block, else the stripped content of its
    last ``<answer>`` tag (the R1-Zero template's place for the answer), else None."""
    code = extract_code(text)
    if code is not None:
        return code
    answers = _ANSWER_TAG.findall(text)
    if answers and answers[-1].strip():
        return answers[-1].strip() + "\n"
    return None


def unit_test_reward(completions: list, tests: list, *, all_or_nothing: bool = False, timeout_s: float = 4.0,
                     max_total_s: float = 30.0, memory_mb: int = 1024, max_workers: int | None = None,
                     **columns) -> list[float | None]:
    """Score each completion by the unit tests of its sample; see the module docstring.

    timeout_s: per test (per input for stdin/stdout tests); max_total_s: per sample.
    max_workers: sandboxes running at once (default: the CPU count).
    """
    if len(tests) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(tests)} tests")
    fn_names = columns.get("fn_name")
    if fn_names is not None and len(fn_names) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(fn_names)} fn_name values")

    def score(i: int) -> float | None:
        try:
            sample_tests = _parse_tests(tests[i], i)
        except (TypeError, ValueError) as err:
            return _bad_tests(i, err)
        if sample_tests is None:
            return None
        code = completion_code(completion_text(completions[i]))
        if code is None:
            _count(samples=1, no_code=1)
            return 0.0
        # Imported here so that `import rewards.code` stays light.
        from sandbox.judge import run_tests

        try:
            report = run_tests(code, sample_tests, fn_name=fn_names[i] if fn_names is not None else None,
                               timeout_s=timeout_s, max_total_s=max_total_s, memory_mb=memory_mb,
                               stop_on_failure=all_or_nothing)
        except (TypeError, ValueError) as err:  # the judge rejected the tests' shape
            return _bad_tests(i, err)
        _count(samples=1, tests=len(report.outcomes), tests_passed=report.passed,
               test_timeouts=report.timeouts, samples_with_timeout=int(report.timeouts > 0),
               harness_errors=int(report.outcomes[0].detail.startswith("harness output")))
        if all_or_nothing:
            return 1.0 if report.passed == len(report.outcomes) else 0.0
        return report.fraction

    workers = max(1, min(len(completions), max_workers or os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(score, range(len(completions))))


def _parse_tests(tests, index: int):
    """The sample's tests in a form `run_tests` takes, or None if there are none."""
    if tests is None:
        return None
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as err:
            raise ValueError(f"tests[{index}] is a string but not JSON: {err}") from None
    if isinstance(tests, dict):
        if not tests.get("inputs"):
            return None
        return tests
    if isinstance(tests, (list, tuple)):
        return list(tests) or None
    raise TypeError(f"tests[{index}] must be a list of asserts, a dict with inputs/outputs, "
                    f"or JSON of either, got {type(tests).__name__}")


def _bad_tests(index: int, err: Exception) -> None:
    _count(bad_tests=1)
    log.warning("code_unit_tests: sample %d scored None: its tests cannot be run (%s); fix that dataset row",
                index, err)
    return None


def _count(**increments: int) -> None:
    with _stats_lock:
        for key, value in increments.items():
            _stats[key] += value


def verifier_stats(reset: bool = False) -> dict[str, int]:
    """Counts since the last reset: samples scored, tests run and passed, tests that
    timed out, samples with at least one timeout, samples without code, runs
    whose harness output was missing or tampered with, and samples whose tests
    could not be read or run (scored None)."""
    with _stats_lock:
        snapshot = dict(_stats)
        if reset:
            _stats.update(dict.fromkeys(_STAT_KEYS, 0))
    return snapshot


__all__ = ["extract_code", "completion_code", "unit_test_reward", "verifier_stats"]
