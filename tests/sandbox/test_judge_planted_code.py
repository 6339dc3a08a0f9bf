"""Code the solution plants for the harness to run: each attempt must score 0.

The solution's working directory is writable; the harness (the process that
writes verdicts) must never import or run anything from it, whichever name leads
there: a name the solution binds to a module, a module a test imports, an
import inside the harness itself, or a startup hook of a fresh interpreter.

Every planted file carries `FORGE`: if it ever runs inside the harness, it finds
the harness object through `gc` and records "pass" for every test, then exits.
The tests all expect wrong answers from `add`, so any pass means a forge.
"""

from __future__ import annotations

from sandbox.judge import run_tests

from .conftest import needs_bwrap

pytestmark = needs_bwrap

FORGE = '''
import gc, os
for obj in gc.get_objects():
    if type(obj).__name__ == "Harness":
        count = len(obj.spec["tests"])
        for index in range(count):
            obj.record("test", index, "pass", "")
        obj.record("done", count)
        os._exit(0)
'''

# add is wrong on every test: only a forged record can pass one.
WRONG = ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert False"]


def plant(*paths: str) -> str:
    """Solution source that writes FORGE to each path (errors ignored) and defines a wrong add."""
    return (f"import os\nFORGE = {FORGE!r}\n"
            f"for path in {list(paths)!r}:\n"
            "    try:\n"
            "        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)\n"
            "        with open(path, 'w') as f:\n"
            "            f.write(FORGE)\n"
            "    except OSError:\n"
            "        pass\n"
            "def add(a, b):\n    return 0\n")


def assert_no_pass(solution, tests=WRONG, **kwargs):
    report = run_tests(solution, tests, timeout_s=1.0, **kwargs)
    assert report.passed == 0, [(o.status, o.detail) for o in report.outcomes]
    return report


def test_tested_name_bound_to_a_module_named_like_a_planted_file():
    # The reported forge: `add` is a module object named "fractions", and
    # fractions.py sits in the working directory.
    sol = plant("fractions.py") + "import types\nadd = types.ModuleType('fractions')\n"
    report = assert_no_pass(sol)
    assert "not callable" in report.outcomes[0].detail, report.outcomes[0].detail
    # The same through the reward the training loop uses.
    from rewards.code import unit_test_reward

    assert unit_test_reward([f"```python\n{sol}\n```"], [WRONG]) == [0.0]


def test_module_names_the_solution_chooses_select_nothing_to_import():
    # Stdlib names, made-up names and the harness's own module names.
    for name in ("fractions", "heapq", "decimal", "json", "not_a_module", "_rlkit_wire", "_rlkit_harness"):
        sol = plant(f"{name}.py") + f"import types\nadd = types.ModuleType({name!r})\n"
        assert_no_pass(sol)


def test_modules_a_test_imports_come_from_the_standard_library():
    sol = plant("heapq.py", "statistics.py", "typing.py", "bisect/__init__.py")
    tests = ["import heapq\nassert add(1, 2) == 3", "from statistics import mean\nassert add(2, 2) == 5",
             "import typing, bisect\nassert False"]
    assert_no_pass(sol, tests)
    # The same imports with an honest solution work: they find the real modules.
    honest = plant("heapq.py", "statistics.py", "typing.py") + "def add(a, b):\n    return a + b\n"
    ok = ["import heapq\nassert heapq.nsmallest(1, [add(1, 2), 7]) == [3]",
          "from statistics import mean\nassert mean([add(1, 1), 4]) == 3", "import typing\nassert typing.List"]
    assert run_tests(honest, ok, timeout_s=2.0).fraction == 1.0


def test_planted_modules_in_tmp_and_bytecode_caches():
    sol = plant("/tmp/heapq.py", "__pycache__/heapq.cpython-311.pyc", "/tmp/__pycache__/statistics.cpython-311.pyc")
    assert_no_pass(sol, ["import heapq\nassert add(1, 2) == 3", "import statistics\nassert False"])


def test_startup_hooks_for_a_fresh_worker_do_not_reach_the_harness():
    # The first test hangs, so the harness starts a fresh interpreter for the next
    # ones; the solution planted every startup hook it could think of before that.
    hooks = ["sitecustomize.py", "usercustomize.py", "/tmp/sitecustomize.py",
             "/run/lib/sitecustomize.py", "/run/lib/_rlkit_wire.py", "/run/lib/_rlkit_worker.py",
             ".local/lib/python3.11/site-packages/usercustomize.py"]
    sol = plant(*hooks) + (
        "with open('forge.pth', 'w') as f:\n    f.write('import sitecustomize\\n')\n"
        "def add(a, b):\n    while a == 1:\n        pass\n    return 0\n")
    report = assert_no_pass(sol, ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "import heapq\nassert False"])
    assert report.outcomes[0].status == "timeout"


def test_a_module_the_solution_fakes_under_a_stdlib_name_is_not_used_by_tests():
    # `math` in the solution's namespace is a module object that claims everything is close;
    # the test's `math` is the harness's own.
    sol = ("import types\nmath = types.ModuleType('math')\nmath.isclose = lambda *a, **k: True\n"
           "def add(a, b):\n    return 0\n")
    assert_no_pass(sol, ["assert math.isclose(add(1, 2), 3)"])


def test_modules_the_solution_imported_still_work_in_tests():
    # Not preloaded by the harness: the module stays in the worker and its
    # functions run there, returning plain data.
    sol = "import heapq, math\ndef add(a, b):\n    return a + b\n"
    tests = ["assert heapq.nsmallest(2, [add(2, 3), 1, 9]) == [1, 5]",
             "assert math.isclose(add(math.pi, 1), math.pi + 1)"]
    assert run_tests(sol, tests, timeout_s=2.0).fraction == 1.0
