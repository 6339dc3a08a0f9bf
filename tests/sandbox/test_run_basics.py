"""sandbox.run: statuses, stdin, files, output cap, argument checks, the unsafe opt-in."""

from __future__ import annotations

import pytest

import sandbox
from sandbox import runner

from .conftest import needs_bwrap


@needs_bwrap
def test_stdin_to_stdout():
    r = sandbox.run("print(input()[::-1])", stdin="abc")
    # "abc" reversed is "cba"; print adds the newline.
    assert (r.status, r.exit_code, r.stdout, r.truncated) == ("ok", 0, "cba\n", False)


@needs_bwrap
def test_nonzero_exit_is_error_with_its_code():
    r = sandbox.run("import sys; sys.exit(3)")
    assert (r.status, r.exit_code) == ("error", 3)


@needs_bwrap
def test_exception_traceback_shows_only_the_program():
    r = sandbox.run("def g():\n    raise ValueError('boom')\ng()")
    assert r.status == "error" and r.exit_code == 1
    assert r.stderr.rstrip().endswith("ValueError: boom")
    # The launcher that set the limits is not part of the program's traceback.
    assert "_run_program" not in r.stderr and 'File "/run/main.py", line 2, in g' in r.stderr


@needs_bwrap
def test_syntax_error_is_an_error():
    r = sandbox.run("def f(:\n")
    assert r.status == "error" and "SyntaxError" in r.stderr


@needs_bwrap
def test_files_land_in_the_working_directory_and_are_importable():
    r = sandbox.run("import helper, os\nprint(helper.X, open('data/in.txt').read(), os.getcwd())",
                    files={"helper.py": "X = 41 + 1", "data/in.txt": b"bytes too"})
    assert r.status == "ok", r.stderr
    assert r.stdout == "42 bytes too /sandbox\n"


@needs_bwrap
def test_program_runs_as_main():
    r = sandbox.run("print(__name__)")
    assert r.stdout == "__main__\n"


@needs_bwrap
def test_stderr_is_captured_separately():
    r = sandbox.run("import sys; print('out'); print('err', file=sys.stderr)")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")


@needs_bwrap
def test_site_packages_opt_in_reaches_installed_packages():
    # pytest is installed in the interpreter's environment, not in the standard library.
    plain = sandbox.run("import pytest")
    with_site = sandbox.run("import pytest; print('found')", site_packages=True)
    assert plain.status == "error" and "ModuleNotFoundError" in plain.stderr
    assert with_site.status == "ok" and with_site.stdout == "found\n"


@needs_bwrap
def test_setup_failure_is_sandbox_error(monkeypatch):
    monkeypatch.setattr(runner._bwrap, "_system_mounts", lambda site_packages: ("--ro-bind", "/no/such/dir-rlkit", "/x"))
    r = sandbox.run("print(1)")
    assert r.status == "sandbox_error" and r.exit_code is None
    assert "/no/such/dir-rlkit" in r.stderr  # bwrap names the path it could not mount


def test_missing_bwrap_refuses_with_install_hint(monkeypatch):
    monkeypatch.setattr(runner, "available", lambda: False)
    monkeypatch.delenv(runner.UNSAFE_ENV, raising=False)
    with pytest.raises(sandbox.SandboxUnavailableError, match="apt-get install bubblewrap"):
        sandbox.run("print(1)")


def test_unsafe_mode_is_explicit_and_still_limited(monkeypatch):
    monkeypatch.setattr(runner, "available", lambda: False)
    monkeypatch.setenv("RLKIT_TEST_SECRET", "hunter2")
    r = sandbox.run("import os; print(input(), sorted(os.environ))", stdin="hi", unsafe_no_namespaces=True)
    # The environment is still cleared to PATH/HOME/LANG even without namespaces.
    assert (r.status, r.stdout) == ("ok", "hi ['HOME', 'LANG', 'PATH']\n")
    spin = sandbox.run("while True: pass", timeout_s=0.5, unsafe_no_namespaces=True)
    assert spin.status == "timeout"


def test_unsafe_mode_by_environment(monkeypatch):
    monkeypatch.setattr(runner, "available", lambda: False)
    monkeypatch.setenv(runner.UNSAFE_ENV, "1")
    assert sandbox.run("print(6 * 7)").stdout == "42\n"


@pytest.mark.parametrize("kwargs, word", [
    ({"timeout_s": 0}, "timeout_s"),
    ({"memory_mb": -1}, "memory_mb"),
    ({"max_processes": 0}, "max_processes"),
    ({"files": {"../escape.txt": "x"}}, "escape.txt"),
    ({"files": {"/etc/passwd": "x"}}, "/etc/passwd"),
    ({"files": {"a.txt": 3}}, "a.txt"),
])
def test_bad_arguments_name_the_culprit(kwargs, word):
    with pytest.raises((ValueError, TypeError), match=word):
        sandbox.run("print(1)", **kwargs)


def test_code_must_be_a_string():
    with pytest.raises(TypeError, match="code must be Python source"):
        sandbox.run(b"print(1)")


@needs_bwrap
def test_shutdown_still_joins_threads_runs_atexit_and_flushes():
    # The launcher skips the interpreter's teardown but keeps what a program sees.
    code = """
import atexit, sys, threading, time
atexit.register(print, "atexit ran")
def late():
    time.sleep(0.2)
    print("thread joined")
threading.Thread(target=late).start()
sys.stdout.write("no newline, ")
"""
    r = sandbox.run(code, timeout_s=5.0)
    assert (r.status, r.stdout) == ("ok", "no newline, thread joined\natexit ran\n")


@needs_bwrap
def test_system_exit_arguments_map_like_the_interpreter():
    # exit(300) is 300 mod 256 = 44; a string is printed to stderr with status 1.
    assert sandbox.run("import sys; sys.exit(300)").exit_code == 44
    r = sandbox.run("import sys; sys.exit('bye')")
    assert (r.exit_code, r.stderr) == (1, "bye\n")
    assert sandbox.run("import sys; sys.exit()").status == "ok"
