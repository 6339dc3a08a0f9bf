"""The host filesystem, environment and process table stay out of reach."""

from __future__ import annotations

import os

import sandbox

from .conftest import needs_bwrap

pytestmark = needs_bwrap


def test_host_file_is_not_writable(tmp_path):
    target = tmp_path / "host.txt"
    target.write_text("original")
    code = f"""
for path in ({str(target)!r}, {str(tmp_path / 'new.txt')!r}, "/usr/rlkit-was-here", "/etc/rlkit-was-here"):
    try:
        with open(path, "w") as f:
            f.write("overwritten")
        print("wrote", path)
    except OSError as e:
        print("refused", type(e).__name__)
"""
    r = sandbox.run(code)
    assert "wrote" not in r.stdout and r.stdout.count("refused") == 4, (r.stdout, r.stderr)
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host.txt"]
    assert not os.path.exists("/usr/rlkit-was-here")


def test_interpreter_prefix_is_read_only():
    r = sandbox.run("import os\ntry:\n    open(os.__file__, 'a')\n    print('writable')\n"
                    "except OSError as e:\n    print(e.errno)")
    # EACCES (13): the program's uid does not own the file; EROFS (30): read-only mount.
    assert r.stdout in ("13\n", "30\n")


def test_environment_secrets_do_not_leak(monkeypatch):
    monkeypatch.setenv("RLKIT_TEST_SECRET", "hunter2-sandbox")
    code = """
import os
print(dict(os.environ))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print(open(f"/proc/{pid}/environ", "rb").read())
        except OSError as e:
            print(pid, "unreadable")
"""
    r = sandbox.run(code)
    assert r.status == "ok", r.stderr
    assert "hunter2-sandbox" not in r.stdout + r.stderr
    assert "RLKIT_TEST_SECRET" not in r.stdout


def test_host_processes_are_invisible():
    code = """
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(pids)
print([open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode() for p in pids])
"""
    r = sandbox.run(code)
    lines = r.stdout.splitlines()
    # A fresh pid namespace in which the program itself is pid 1, alone.
    assert lines[0] == "[1]", r.stdout
    assert "pytest" not in r.stdout and str(os.getpid()) not in lines[0]


def test_private_tmp_is_empty_and_not_the_hosts(tmp_path):
    marker = "/tmp/rlkit-host-marker-" + str(os.getpid())
    with open(marker, "w") as f:
        f.write("host")
    try:
        r = sandbox.run("import os\nprint(os.listdir('/tmp'), os.listdir('.'))")
        assert r.stdout == "[] []\n"
    finally:
        os.remove(marker)
