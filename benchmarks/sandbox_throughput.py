"""Sandboxed runs per second against bare subprocesses, same program, same run.

    python benchmarks/sandbox_throughput.py [--workers 2] [--n 200] [--program 'print(1)']

Both sides start the same interpreter binary with the same flags (-I -S) on the
same program and capture its output; the sandbox side adds bubblewrap, the
launcher (rlimits, uid switch) and bounded capture. The two are measured in
alternating rounds so that load from other processes falls on both alike. The
last line is the summary: sandbox_rps=.. bare_rps=.. ratio=..
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import sandbox
from sandbox import _bwrap


def sandboxed(program: str) -> None:
    r = sandbox.run(program, timeout_s=10.0)
    if r.status != "ok":
        raise RuntimeError(f"sandboxed run failed: {r.status} {r.stderr[-500:]}")


def bare(program: str) -> None:
    subprocess.run([_bwrap.interpreter()[0], "-I", "-S", "-c", program], capture_output=True, check=True)


def timed(pool: ThreadPoolExecutor, fn, program: str, n: int) -> float:
    start = time.perf_counter()
    list(pool.map(lambda _: fn(program), range(n)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n", type=int, default=200, help="runs per side")
    parser.add_argument("--rounds", type=int, default=4, help="alternations between the two sides")
    parser.add_argument("--program", default="print(1)")
    args = parser.parse_args()
    if not sandbox.available():
        sys.exit("bubblewrap is not installed: apt-get install bubblewrap")
    per_round = max(1, args.n // args.rounds)
    with ThreadPoolExecutor(args.workers) as pool:
        timed(pool, sandboxed, args.program, args.workers)  # warm caches on both sides
        timed(pool, bare, args.program, args.workers)
        t_sandbox = t_bare = 0.0
        for _ in range(args.rounds):
            t_sandbox += timed(pool, sandboxed, args.program, per_round)
            t_bare += timed(pool, bare, args.program, per_round)
    total = per_round * args.rounds
    sandbox_rps, bare_rps = total / t_sandbox, total / t_bare
    print(f"workers={args.workers} runs_per_side={total} program={args.program!r} "
          f"sandbox_ms_per_run={1000 * t_sandbox / total:.1f} bare_ms_per_run={1000 * t_bare / total:.1f}")
    print(f"sandbox_rps={sandbox_rps:.1f} bare_rps={bare_rps:.1f} ratio={sandbox_rps / bare_rps:.2f}")


if __name__ == "__main__":
    main()
