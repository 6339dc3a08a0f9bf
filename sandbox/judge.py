"""Test an untrusted solution in the sandbox and judge the results on this side.

    from sandbox.judge import run_tests
    report = run_tests(solution_source, ["assert add(1, 2) == 3"])
    report.fraction          # 1.0

Three kinds of tests (the formats of MBPP/HumanEval and APPS/TACO):

- a list of assert statements (any Python snippet; it passes if it runs through);
- ``{"inputs": [...], "outputs": [...]}``: the solution runs as a script, once per
  input on stdin, and its stdout is compared with the output here;
- the same with ``"fn_name"``: each input is an argument list for the solution's
  function ``fn_name`` (or ``Solution().fn_name``), and the returned value is
  compared with the output here.

How it is made unforgeable (see `sandbox._harness` for the sandbox side): the
solution runs in a worker process that never holds the expected values; only
plain data (numbers, strings, containers of them) comes out of it. Expected
outputs of stdin/stdout and call tests never enter the sandbox at all: the
returned values and printed text are compared here. Assert tests run inside the
sandbox in a harness process that the worker cannot inspect or signal, on plain
values only, and report over a channel the worker has no descriptor for; each
record carries a per-run random nonce, and a missing, repeated or unsigned record
fails the whole run. Exit codes are never read as success.
"""

from __future__ import annotations

import binascii
import marshal
import math
import os
import secrets
from dataclasses import dataclass, field

from sandbox import _wire
from sandbox.result import Result
from sandbox.runner import run


def _source(name: str) -> str:
    with open(os.path.join(os.path.dirname(__file__), name), encoding="utf-8") as f:
        return f.read()


# The harness and its modules run inside the sandbox under these module names.
_LIBRARIES = {"_rlkit_wire": _source("_wire.py"), "_rlkit_worker": _source("_worker.py"),
              "_rlkit_harness": _source("_harness.py")}
# A worker restarted after a timeout re-runs this file without the launcher, so it
# finds the libraries itself, next to it.
_PROGRAM = ("import os, sys\n"
            "sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))\n"
            "import _rlkit_harness\n"
            "_rlkit_harness.main()\n")

TEST_STATUSES = ("pass", "fail", "timeout", "error", "skipped")
_STARTUP_S = 3.0  # sandbox and interpreter start, on a busy machine
_PER_TEST_SLACK_S = 0.5  # a fresh worker after a timeout, record writing


@dataclass(frozen=True)
class TestOutcome:
    status: str  # one of TEST_STATUSES
    detail: str = ""


@dataclass(frozen=True)
class TestReport:
    """Per-test outcomes, in the order of the tests, and the sandbox run itself."""

    outcomes: list[TestOutcome]
    run: Result | None = field(repr=False, default=None)

    @property
    def passed(self) -> int:
        return sum(o.status == "pass" for o in self.outcomes)

    @property
    def fraction(self) -> float:
        return self.passed / len(self.outcomes) if self.outcomes else 0.0

    @property
    def timeouts(self) -> int:
        return sum(o.status == "timeout" for o in self.outcomes)


def run_tests(solution: str, tests, *, fn_name: str | None = None, timeout_s: float = 4.0,
              memory_mb: int = 1024, stop_on_failure: bool = False, max_total_s: float = 60.0,
              max_output_bytes: int = 1 << 20, unsafe_no_namespaces: bool = False) -> TestReport:
    """Run ``tests`` against Python source ``solution``; see the module docstring.

    timeout_s: per test (per input for stdin/stdout tests).
    max_total_s: cap on the whole sandboxed run; tests it cuts off time out.
    stop_on_failure: skip the remaining tests after the first one that cannot pass.
    max_output_bytes: per test, the stdout kept or the size of a returned value.
    """
    mode, items, fn_name, expected = _normalise(tests, fn_name)
    nonce = secrets.token_hex(_wire.NONCE_BYTES // 2).encode()
    spec = {"nonce": nonce, "mode": mode, "solution": solution, "tests": items, "fn_name": fn_name,
            "timeout_s": float(timeout_s), "stop_on_failure": bool(stop_on_failure),
            "max_output": int(max_output_bytes)}
    total_s = min(max_total_s, _STARTUP_S + len(items) * (timeout_s + _PER_TEST_SLACK_S + (mode == "stdio")))
    # Base64 makes records 4/3 larger; each holds at most one test's output.
    cap = 4096 + len(items) * (2 * max_output_bytes + 1024)
    result = run(_PROGRAM, stdin=marshal.dumps(spec), libraries=_LIBRARIES, timeout_s=total_s,
                 memory_mb=memory_mb, max_output_bytes=cap, unsafe_no_namespaces=unsafe_no_namespaces)
    records = _read_records(result.stdout, nonce, len(items))
    outcomes = []
    for index in range(len(items)):
        if records is None:
            outcomes.append(TestOutcome("error", "harness output was missing or tampered with"))
        elif index not in records:
            lost = "timeout" if result.status == "timeout" else "error"
            outcomes.append(TestOutcome(lost, f"no result: sandbox {result.status}"))
        else:
            outcomes.append(_judge(mode, records[index], expected[index] if expected else None))
    return TestReport(outcomes, result)


def _normalise(tests, fn_name):
    """(mode, items for the sandbox, fn_name, expected outputs kept here)."""
    if isinstance(tests, (list, tuple)):
        if not all(isinstance(t, str) for t in tests):
            raise TypeError("assert tests must be a list of Python source strings")
        return "assert", list(tests), None, None
    if not isinstance(tests, dict) or "inputs" not in tests or "outputs" not in tests:
        raise TypeError("tests must be a list of assert strings or a dict with 'inputs' and 'outputs', "
                        f"got {type(tests).__name__}")
    inputs, outputs = list(tests["inputs"]), list(tests["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError(f"tests have {len(inputs)} inputs but {len(outputs)} outputs")
    fn_name = fn_name or tests.get("fn_name")
    if fn_name:
        for i, args in enumerate(inputs):
            if not isinstance(args, (list, tuple)):
                raise TypeError(f"input {i} of a call test must be an argument list, got {type(args).__name__}")
        return "call", [_wire.to_plain(list(args)) for args in inputs], str(fn_name), outputs
    return "stdio", [_text(x).encode() for x in inputs], None, [_text(x) for x in outputs]


def _text(value) -> str:
    # Some datasets store an input or output as a list of lines.
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def _read_records(stdout: str, nonce: bytes, count: int) -> dict[int, tuple] | None:
    """Test index -> (status, payload), or None if anything on the channel is off."""
    records: dict[int, tuple] = {}
    prefix = nonce.decode() + " "
    done = False
    for line in stdout.splitlines():
        if done or not line.startswith(prefix):
            return None
        try:
            record = _wire.loads_plain(binascii.a2b_base64(line[len(prefix):]))
        except (ValueError, binascii.Error, EOFError, TypeError):
            return None
        if record == ("done", count):
            done = True
        elif (type(record) is tuple and len(record) == 4 and record[0] == "test" and type(record[1]) is int
              and 0 <= record[1] < count and record[1] not in records and record[2] in _HARNESS_STATUSES):
            records[record[1]] = record[2:]
        else:
            return None
    return records


_HARNESS_STATUSES = frozenset(("pass", "fail", "ok", "error", "timeout", "killed", "output_limit", "skipped"))


def _judge(mode: str, record: tuple, expected) -> TestOutcome:
    status, payload = record
    if status in ("timeout", "skipped"):
        return TestOutcome(status, _detail(payload))
    if mode == "assert":
        return TestOutcome("pass" if status == "pass" else "fail", _detail(payload))
    if status != "ok":
        return TestOutcome("fail", f"{status}: {_detail(payload)}")
    if mode == "call":
        return TestOutcome("pass") if _values_match(payload, expected) else TestOutcome(
            "fail", f"returned {payload!r:.200}")
    if type(payload) is not bytes:
        return TestOutcome("error", "script output is not bytes")
    actual = payload.decode("utf-8", "replace")
    return TestOutcome("pass") if stdout_matches(actual, expected) else TestOutcome(
        "fail", f"printed {actual!r:.200}")


def _detail(payload) -> str:
    return payload if isinstance(payload, str) else repr(payload)[:300]


def _values_match(actual, expected) -> bool:
    try:
        if _same(actual, expected):
            return True
        # APPS-style data often wraps the expected return value in a list.
        return isinstance(expected, list) and len(expected) == 1 and _same(actual, expected[0])
    except RecursionError:
        return False


def _same(a, b) -> bool:
    """Equality of plain data, tuples read as lists (datasets are JSON), floats to 1e-6."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
        return False
    return a == b


def stdout_matches(actual: str, expected: str) -> bool:
    """Judge-style comparison: line by line ignoring trailing whitespace, else token
    by token, numbers with a decimal point or exponent to 1e-6."""
    lines_a = [line.rstrip() for line in actual.rstrip().splitlines()]
    lines_e = [line.rstrip() for line in expected.rstrip().splitlines()]
    if lines_a == lines_e:
        return True
    tokens_a, tokens_e = actual.split(), expected.split()
    if len(tokens_a) != len(tokens_e):
        return False
    return all(x == y or _close_numbers(x, y) for x, y in zip(tokens_a, tokens_e))


def _close_numbers(actual: str, expected: str) -> bool:
    if not any(c in expected for c in ".eE"):
        return False
    try:
        a, e = float(actual), float(expected)
    except ValueError:
        return False
    return math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-6)


__all__ = ["TEST_STATUSES", "TestOutcome", "TestReport", "run_tests", "stdout_matches"]
