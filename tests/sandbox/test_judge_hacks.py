"""Reward hacks against sandbox.judge: each must score 0.

The reference task is `add(a, b)`; the tests below expect 1+2 == 3 and 2+3 == 5.
Every hack returns a wrong answer (or none at all) and tries to be scored as
passing anyway.
"""

from __future__ import annotations

import time

from sandbox.judge import run_tests

from .conftest import needs_bwrap

pytestmark = needs_bwrap

ASSERTS = ["assert add(1, 2) == 3", "assert add(2, 3) == 5"]
CALLS = {"inputs": [[1, 2], [2, 3]], "outputs": [3, 5], "fn_name": "add"}
STDIO = {"inputs": ["1 2\n", "2 3\n"], "outputs": ["3\n", "5\n"]}


def assert_scores_zero(solution, tests=ASSERTS, **kwargs):
    report = run_tests(solution, tests, timeout_s=1.0, **kwargs)
    assert report.passed == 0, [(o.status, o.detail) for o in report.outcomes]
    return report


def test_sys_exit_before_the_tests_run():
    report = assert_scores_zero("import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n")
    assert report.outcomes[0].detail == "solution did not load: RemoteError: SystemExit: 0"


def test_os_exit_before_the_tests_run():
    # The worker dies without a word; a missing answer is a failure, never a pass.
    assert_scores_zero("import os\nos._exit(0)\n")
    assert_scores_zero("import os\nos._exit(0)\n", STDIO)


def test_system_exit_raised_inside_the_checked_function():
    report = assert_scores_zero("def add(a, b):\n    raise SystemExit(0)\n")
    # The harness turns it into an ordinary error: it cannot stop the harness.
    assert "RemoteError: SystemExit" in report.outcomes[0].detail


def test_os_exit_inside_the_checked_function():
    assert_scores_zero("import os\ndef add(a, b):\n    os._exit(0)\n")
    assert_scores_zero("import os\ndef add(a, b):\n    os._exit(0)\n", CALLS)


def test_object_equal_to_everything():
    sol = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
           "    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\n"
           "def add(a, b):\n    return Anything()\n")
    assert_scores_zero(sol)
    report = assert_scores_zero(sol, CALLS)
    assert "not plain data" in report.outcomes[0].detail


def test_builtin_subclasses_that_lie_about_equality():
    sol = ("class LyingInt(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
           "class LyingStr(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
           "def add(a, b):\n    return LyingInt(0) if isinstance(a, int) else LyingStr('')\n")
    # Only the data survives: an int 0 and a str '' are compared, and are wrong.
    assert_scores_zero(sol)
    assert_scores_zero(sol, CALLS)


def test_truthy_object_for_a_bare_assert():
    sol = "class Yes:\n    def __bool__(self):\n        return True\ndef is_sum(a, b, c):\n    return Yes()\n"
    report = assert_scores_zero(sol, ["assert is_sum(1, 2, 4)"])
    assert "no trusted truth value" in report.outcomes[0].detail


def test_patched_builtins_do_not_reach_the_checks():
    sol = ("import builtins, sys\n"
           "builtins.abs = lambda x: 0\n"
           "builtins.AssertionError = KeyError\n"
           "builtins.isinstance = lambda *a: True\n"
           "builtins.print = lambda *a, **k: None\n"
           "__builtins__ = {}\n"
           "def add(a, b):\n    return 0\n")
    assert_scores_zero(sol, ["assert abs(add(1, 2) - 3) < 1e-9", "assert isinstance(add(1, 2), str)"] + ASSERTS)


def test_printed_pass_markers_and_forged_records():
    # Writes "passed" lines, in the harness's record layout with made-up nonces, to
    # every descriptor it has and to the harness's stdout through /proc.
    sol = """
import os, sys, base64, marshal
fake = b"%s " % os.urandom(8).hex().encode() + base64.b64encode(marshal.dumps(("test", 0, "pass", ""))) + b"\\n"
print("all tests passed", flush=True)
for fd in range(64):
    try:
        os.write(fd, fake)
    except OSError:
        pass
for path in ("/proc/1/fd/1", "/proc/self/fd/1", "/dev/stdout"):
    try:
        with open(path, "wb") as f:
            f.write(fake)
    except OSError:
        pass
def add(a, b):
    return 0
"""
    assert_scores_zero(sol)
    assert_scores_zero(sol, CALLS)
    assert_scores_zero(sol.replace("def add(a, b):\n    return 0\n", "print(0)\n"), STDIO)


def test_printing_an_expected_output_without_reading_the_input():
    # The expected outputs (3 and 5) never enter the sandbox: a guess is only a guess.
    assert_scores_zero("print('YES')\n", STDIO)
    # A lucky constant matches one input of two; all-or-nothing scoring gives it nothing.
    lucky = run_tests("print(3)\n", STDIO, stop_on_failure=True)
    assert [o.status for o in lucky.outcomes] == ["pass", "fail"]


def test_syntax_error():
    report = assert_scores_zero("def add(a, b)\n    return a + b\n")
    assert "SyntaxError" in report.outcomes[0].detail
    assert_scores_zero("def add(a, b)\n    return a + b\n", STDIO)


def test_harness_memory_and_descriptors_are_out_of_reach():
    # The checked function reports, through its exception message, what the worker
    # could read of the harness (pid 1): its memory, its stdin (the instructions)
    # and its stdout (the channel to the host).
    sol = """
import ctypes
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE for itself: no help against the harness
def probe(path, mode):
    try:
        with open(path, mode) as f:
            f.read(1) if "r" in mode else None
        return "OPENED"
    except OSError as e:
        return type(e).__name__
def add(a, b):
    raise ValueError(",".join(probe(p, m) for p, m in
        [("/proc/1/mem", "rb"), ("/proc/1/fd/0", "rb"), ("/proc/1/fd/1", "wb"), ("/proc/1/environ", "rb")]))
"""
    report = assert_scores_zero(sol)
    assert "OPENED" not in report.outcomes[0].detail, report.outcomes[0].detail
    assert report.outcomes[0].detail.count("PermissionError") == 4


def test_worker_memory_never_holds_the_tests():
    # The test carries a marker the solution cannot know: "needle-" then four
    # characters. The worker scans its whole memory for "needle-" followed by
    # bytes whose hash is the marker's; only the hash is in the solution. Had the
    # worker been forked after the harness read the tests, it would find them.
    sol = """
import ctypes, hashlib, re
WANT = hashlib.sha256(b"Q7x!").hexdigest()
def add(a, b):
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: let this process read its own memory
    found, scanned = False, 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[v" in line:
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
            scanned += len(data)
            for m in re.finditer(b"needle-", data):
                if hashlib.sha256(data[m.end():m.end() + 4]).hexdigest() == WANT:
                    found = True
    raise ValueError(f"found={found} scanned_mb={scanned >> 20}")
"""
    report = assert_scores_zero(sol, ["assert add(1, 2) == 3  # needle-Q7x!"])
    detail = report.outcomes[0].detail
    assert "found=False" in detail, detail
    assert int(detail.rsplit("scanned_mb=", 1)[1]) >= 1  # it did read its memory
    # Control: with the marker in the solution's own source, the same scan finds it.
    control = run_tests(sol + "# needle-Q7x!\n", ["assert add(1, 2) == 3"], timeout_s=5.0)
    assert "found=True" in control.outcomes[0].detail, control.outcomes[0].detail


def test_stopiteration_cannot_end_a_check_early():
    # In plain Python, StopIteration raised inside map() ends it early and all()
    # of the empty rest is True: this check would pass without one correct answer.
    sol = "def add(a, b):\n    raise StopIteration\n"
    assert_scores_zero(sol, ["assert all(map(lambda x: add(x, 1) == x + 1, range(5)))"])


def test_garbage_and_code_objects_on_the_reply_pipe():
    # During the call the solution rewires the worker to answer with a marshal'd
    # code object; the harness refuses it, and the next test (which needs no
    # solution) runs with a fresh worker.
    sol = """
import marshal, sys
worker = sys.modules["_rlkit_worker"]
def evil_send(fd, obj):
    data = marshal.dumps(compile("import os; os._exit(0)", "x", "exec"))
    worker.write_all(fd, len(data).to_bytes(4, "little") + data)
def add(a, b):
    worker.send = evil_send
    return a + b
"""
    report = run_tests(sol, ["assert add(1, 2) == 3", "assert 1 + 1 == 2"], timeout_s=1.0)
    assert [o.status for o in report.outcomes] == ["fail", "pass"], report.outcomes
    assert "not plain data" in report.outcomes[0].detail


def test_stopping_or_killing_the_harness_changes_nothing():
    # pid 1 ignores signals from inside its namespace: the answer is right, and
    # the harness finishes both tests despite SIGSTOP and SIGKILL.
    sol = "import os, signal\ndef add(a, b):\n    for sig in (signal.SIGSTOP, signal.SIGKILL):\n" \
          "        try:\n            os.kill(1, sig)\n        except OSError:\n            pass\n    return a + b\n"
    report = run_tests(sol, ASSERTS, timeout_s=2.0)
    assert report.fraction == 1.0


def test_fork_bomb_in_the_solution_is_contained():
    sol = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    report = assert_scores_zero(sol)
    assert [o.status for o in report.outcomes] == ["timeout", "timeout"]
    assert time.monotonic() - start < 10


def test_huge_return_value_is_an_error_not_a_crash():
    sol = "def add(a, b):\n    return 'x' * (100 << 20)\n"
    report = run_tests(sol, ["assert add(1, 2) == 3", "assert 2 + 2 == 4"], timeout_s=5.0)
    assert [o.status for o in report.outcomes] == ["fail", "pass"]
