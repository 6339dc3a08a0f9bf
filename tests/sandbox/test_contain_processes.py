"""Process attacks stay inside: fork bombs, thread storms, daemons, killing the parent."""

from __future__ import annotations

import subprocess
import time

import sandbox

from .conftest import host_processes_with, needs_bwrap

pytestmark = needs_bwrap


def test_fork_bomb_hits_the_process_limit_and_dies_with_the_run():
    # Every process forks forever. Only the first one reports, once, when the
    # kernel first refuses a fork (EAGAIN = RLIMIT_NPROC reached).
    code = """
import errno, os
first = True
while True:
    try:
        pid = os.fork()
    except OSError as e:
        if first:
            print("refused", errno.errorcode[e.errno], flush=True)
            first = False
        continue
    if pid == 0:
        first = False
"""
    start = time.monotonic()
    r = sandbox.run(code, timeout_s=1.0, max_processes=16)
    assert r.stdout.startswith("refused EAGAIN"), (r.stdout, r.stderr)
    assert r.status == "timeout"  # the survivors spin until the wall clock
    assert time.monotonic() - start < 5


def test_thread_storm_is_capped_by_the_process_limit():
    code = """
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        n += 1
except RuntimeError as e:
    print(n, e)
"""
    r = sandbox.run(code, timeout_s=5.0, max_processes=20)
    count, _, message = r.stdout.partition(" ")
    # Threads count as processes: the main thread plus at most 19 more fit in 20.
    assert int(count) <= 19 and "can't start new thread" in message, (r.stdout, r.stderr)
    assert r.status == "ok"


def test_daemon_does_not_outlive_a_finished_run():
    # Double fork + setsid: the classic way to escape a parent's process group.
    # The daemon execs `sleep` with an argument unique to this test, so the host's
    # process list shows whether it survived.
    marker = "4242.1717"
    code = f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
import time; time.sleep(0.3)
print("main done")
"""
    r = sandbox.run(code, timeout_s=5.0)
    assert r.status == "ok" and r.stdout == "main done\n"
    assert host_processes_with(marker) == []


def test_daemon_does_not_outlive_a_timed_out_run():
    marker = "4242.2929"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
time.sleep(100)
"""
    r = sandbox.run(code, timeout_s=0.5)
    assert r.status == "timeout"
    assert host_processes_with(marker) == []


def test_killing_the_parent_and_everyone_hurts_only_the_sandbox():
    canary = subprocess.Popen(["sleep", "30"])  # a host process the sandbox must not reach
    try:
        code = f"""
import os, time
for target in (os.getppid(), {canary.pid}):
    try:
        os.kill(target, 9)
        print("sent", target)
    except OSError as e:
        print("refused", target, type(e).__name__)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
os.kill(-1, 9)  # every process this uid may signal except itself: here, only the child
print("child", "killed" if os.waitpid(child, 0)[1] == 9 else "survived")
"""
        r = sandbox.run(code, timeout_s=5.0)
        assert r.status == "ok", r.stderr
        # Pid 1 in the sandbox is bwrap's init: owned by root (refused), or, in a user
        # namespace, deaf to signals from inside it. The canary's host pid names no
        # process in the sandbox's pid namespace.
        assert f"refused {canary.pid} ProcessLookupError" in r.stdout
        assert r.stdout.endswith("child killed\n")
        assert canary.poll() is None
    finally:
        canary.kill()
        canary.wait()
