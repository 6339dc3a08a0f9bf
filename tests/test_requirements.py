"""The `requires` marker: a missing bubblewrap skips locally and fails under CI (CI=true)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_SANDBOX_TEST = "tests/sandbox/test_run_basics.py::test_stdin_to_stdout"


def _run_without_bwrap(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = "/nonexistent"  # no bwrap to be found; the interpreter is called by its full path
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_SANDBOX_TEST],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_missing_bubblewrap_skips_outside_ci():
    run = _run_without_bwrap(None)
    assert run.returncode == 0 and "1 skipped" in run.stdout, run.stdout[-800:]


def test_missing_bubblewrap_fails_under_ci():
    run = _run_without_bwrap("true")
    assert run.returncode == 1 and "1 error" in run.stdout  # failed in setup, run.stdout[-800:]
    assert "apt-get install bubblewrap" in run.stdout
