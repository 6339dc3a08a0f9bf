"""What the unit-test reward costs the training loop: 256 completions of the shipped code task
scored the way the loop scores them, against bare subprocess runs of the same programs.

Usage::

    python benchmarks/code_reward_throughput.py [--data data/tiny_code/test.jsonl] [--n 256] [--workers 2]

Completions, cycling over the task's problems (each a ```python block, as a policy writes it):

- honest (3/8): the reference solution, passes every test;
- wrong (3/8): the right signature returning None, fails every test;
- hacking (3/16): forging a pass (exit 0 before the tests, an object equal to everything, printed
  pass markers, os._exit);
- timing out (1/16): an endless loop at the top level, cut at the first test's deadline.

Rewards side: `rlkit.scoring.Scorer({"code_unit_tests": 1.0})` on `Rollout`s and `Problem`s, as
`rlkit.collect` calls it (the reward's own thread pool runs `--workers` sandboxes at a time;
per-test deadline `--timeout-s`). Every score is checked against its kind (honest 1.0, the rest
0.0) before any figure is printed. Bare side: the same solution followed by the same asserts as
one `python -I -c` program per completion, `--workers` at a time, killed after `--timeout-s`
(no isolation, no per-test harness: the floor that the sandbox is measured against). The last
line: completions per second on each side and their ratio (bare time / reward time, so 1.0
means the sandbox costs nothing over a bare run), over all 256 and over the 240 that do not
time out (where the deadline no longer dominates both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.code import extract_code, unit_test_reward  # noqa: E402
from rlkit.data import Problem  # noqa: E402
from rlkit.scoring import Scorer  # noqa: E402
from rlkit.types import Rollout  # noqa: E402

KINDS = ["honest"] * 6 + ["wrong"] * 6 + ["hack_exit", "hack_equal", "hack_print"] + ["timeout"]  # of 16


def _signature(answer: str) -> tuple[str, str]:
    """('def name(args):', 'name') of the reference solution."""
    line = extract_code(answer).splitlines()[0]
    return line, line[len("def "):line.index("(")]


def completion(kind: str, row: dict) -> str:
    header, name = _signature(row["answer"])
    bodies = {
        "honest": extract_code(row["answer"]),
        "wrong": f"{header}\n    return None\n",
        "hack_exit": "import sys\nsys.exit(0)\n",
        "hack_equal": f"class Anything:\n    def __eq__(self, other):\n        return True\n\n"
                      f"def {name}(*args):\n    return Anything()\n",
        "hack_print": "print('pass\\n' * 100)\nimport os\nos._exit(0)\n",
        "timeout": "while True:\n    pass\n",
    }
    return f"<think> here it is </think>\n```python\n{bodies[kind]}```"


def build(rows: list[dict], n: int) -> tuple[list[str], list[str], list[dict]]:
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    picked = [rows[i % len(rows)] for i in range(n)]
    return kinds, [completion(k, r) for k, r in zip(kinds, picked)], picked


def score_like_the_loop(completions: list[str], picked: list[dict], timeout_s: float,
                        workers: int) -> tuple[list[float], dict[str, float]]:
    reward = partial(unit_test_reward, timeout_s=timeout_s, max_workers=workers)
    reward.__name__ = "code_unit_tests"
    scorer = Scorer({reward: 1.0}, "code_unit_tests")
    problems = [Problem(index=i, prompt=r["prompt"], prompt_ids=[0], columns={"answer": r["answer"], "tests": r["tests"]})
                for i, r in enumerate(picked)]
    rollouts = [Rollout(prompt_ids=[0], completion_ids=[1], logprobs=[0.0], versions=[0], finish_reason="stop", text=c)
                for c in completions]
    metrics = scorer.score(rollouts, problems, group_size=1)
    return [r.reward for r in rollouts], metrics


def run_bare(completions: list[str], picked: list[dict], timeout_s: float, workers: int) -> None:
    def one(i: int) -> None:
        program = extract_code(completions[i]) + "\n" + "\n".join(picked[i]["tests"]) + "\n"
        try:
            subprocess.run([sys.executable, "-I", "-c", program], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(completions))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/tiny_code/test.jsonl"))
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout-s", type=float, default=4.0, help="per-test deadline (the reward's default)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    kinds, completions, picked = build(rows, args.n)

    score_like_the_loop(completions[:4], picked[:4], args.timeout_s, args.workers)  # warm-up: imports, caches
    fast = [i for i, k in enumerate(kinds) if k != "timeout"]
    timings = {}
    for label, idx in (("all", list(range(args.n))), ("no_timeouts", fast)):
        subset, rows_ = [completions[i] for i in idx], [picked[i] for i in idx]
        start = time.perf_counter()
        scores, metrics = score_like_the_loop(subset, rows_, args.timeout_s, args.workers)
        reward_s = time.perf_counter() - start
        wrong = [(kinds[i], s) for i, s in zip(idx, scores) if s != (1.0 if kinds[i] == "honest" else 0.0)]
        if wrong:
            raise SystemExit(f"{len(wrong)} completions scored against their kind, e.g. {wrong[:3]}")
        start = time.perf_counter()
        run_bare(subset, rows_, args.timeout_s, args.workers)
        timings[label] = (len(idx), reward_s, time.perf_counter() - start, metrics)

    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    print(f"completions={args.n} {counts} workers={args.workers} timeout_s={args.timeout_s}")
    print("every score as its kind requires (honest 1.0, others 0.0)")
    for label, (n, reward_s, bare_s, metrics) in timings.items():
        counted = {k: v for k, v in metrics.items() if k.startswith(("reward/verifier", "reward/code"))}
        print(f"{label:12s} n={n:3d}  reward (sandboxed, through Scorer) {reward_s:6.2f} s = {n / reward_s:6.1f}/s"
              f"   bare subprocess {bare_s:6.2f} s = {n / bare_s:6.1f}/s   ratio {bare_s / reward_s:.2f}   {counted}")
    n, reward_s, bare_s, _ = timings["all"]
    _, fast_reward_s, fast_bare_s, _ = timings["no_timeouts"]
    print(f"reward_cps={n / reward_s:.1f} bare_cps={n / bare_s:.1f} ratio={bare_s / reward_s:.2f} "
          f"ratio_without_timeouts={fast_bare_s / fast_reward_s:.2f}")


if __name__ == "__main__":
    main()
