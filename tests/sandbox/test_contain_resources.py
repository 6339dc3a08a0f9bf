"""Resource attacks end cleanly: memory, disk, endless sleep or spin, output floods."""

from __future__ import annotations

import time

import sandbox

from .conftest import needs_bwrap

pytestmark = needs_bwrap


def test_memory_hog_gets_memory_status():
    # 64 MiB chunks until the 256 MiB address-space limit refuses one.
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))"
    r = sandbox.run(code, memory_mb=256, timeout_s=5.0)
    assert r.status == "memory", (r.status, r.stderr[-300:])


def test_single_huge_allocation_is_refused():
    r = sandbox.run("x = bytearray(8 << 30)\nprint('allocated')", memory_mb=256)
    assert r.status == "memory" and "allocated" not in r.stdout


def test_disk_hog_stops_at_the_size_cap():
    # Writes 1 MiB blocks to the working directory, then /tmp, counting what lands.
    code = """
import os
total = 0
for path in ("big.bin", "/tmp/big.bin"):
    try:
        with open(path, "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
                f.flush()
                total += 1
    except OSError as e:
        print(path, type(e).__name__, e.errno)
print("MiB", total)
"""
    start = time.monotonic()
    r = sandbox.run(code, disk_mb=8, timeout_s=5.0)
    assert r.status == "ok", r.stderr
    # Each tmpfs holds 8 MiB and so does RLIMIT_FSIZE: at most 8 whole blocks per file.
    assert int(r.stdout.split("MiB")[1]) <= 16
    assert "big.bin OSError 27" in r.stdout or "big.bin OSError 28" in r.stdout  # EFBIG or ENOSPC
    assert time.monotonic() - start < 5


def test_many_small_files_stop_at_the_tmpfs_size():
    code = """
n = 0
try:
    while True:
        with open(f"f{n}", "wb") as f:
            f.write(b"x" * (256 << 10))
        n += 1
except OSError as e:
    print(n, e.errno)
"""
    r = sandbox.run(code, disk_mb=4, timeout_s=5.0)
    n, errno = (int(x) for x in r.stdout.split())
    # 4 MiB of 256 KiB files is 16 files at most; then ENOSPC (28).
    assert n <= 16 and errno == 28


def test_sleeping_forever_times_out():
    start = time.monotonic()
    r = sandbox.run("import time\ntime.sleep(10_000)", timeout_s=0.5)
    assert r.status == "timeout" and r.exit_code is None
    assert 0.5 <= r.wall_s < 3 and time.monotonic() - start < 3


def test_spinning_forever_times_out():
    r = sandbox.run("while True:\n    pass", timeout_s=0.5)
    assert r.status == "timeout" and r.wall_s < 3


def test_spinning_threads_time_out_by_whichever_limit_comes_first():
    # Three spinning threads burn CPU up to twice as fast as the wall clock runs on
    # two cores: RLIMIT_CPU (int(1.5)+1 = 2 s of CPU, then SIGXCPU, exit 128+24)
    # may come before the 1.5 s wall clock, or not on a busy machine. Either way
    # the run is a timeout, and not a crash of the launcher.
    code = """
import threading
def spin():
    while True:
        pass
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
spin()
"""
    r = sandbox.run(code, timeout_s=1.5)
    assert r.status == "timeout" and r.exit_code in (None, 128 + 24), (r.exit_code, r.stderr)


def test_huge_output_is_cut_at_the_cap():
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    start = time.monotonic()
    r = sandbox.run(code, timeout_s=5.0, max_output_bytes=100_000)
    assert r.truncated and len(r.stdout) == 100_000 and set(r.stdout) == {"x"}
    # Past the cap the run is stopped instead of draining an endless stream.
    assert r.status == "killed" and time.monotonic() - start < 3


def test_output_under_the_cap_is_whole():
    r = sandbox.run("print('y' * 999)", max_output_bytes=1000)
    assert not r.truncated and r.stdout == "y" * 999 + "\n"  # 999 + newline = 1000 bytes
