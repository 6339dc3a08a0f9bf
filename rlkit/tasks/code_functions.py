"""Procedurally generated function-writing problems with unit tests, for code RL through the loop.

Each problem asks for one small Python function; its tests are assert statements (the
MBPP/HumanEval format `rewards.code` reads from the `tests` column), computed from a
reference implementation on random inputs, so every expected value is right by
construction. The `answer` column holds the reference solution as a fenced Python block
(a completion of that shape passes every test).

Families (each with random constants, names and inputs): add a constant, multiply by a
constant, clamp into a range, sum of a list, largest element, count of a value in a list,
digit sum, reverse a string, repeat a string, is a number divisible by k.

    python -m rlkit.tasks.code_functions --out data/tiny_code --train 512 --test 64 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TESTS_PER_PROBLEM = 4


@dataclass(frozen=True)
class Family:
    name: str
    # (rng) -> (function name, argument names, prompt text, reference source, reference callable, input maker)
    make: Callable[[random.Random], tuple[str, list[str], str, str, Callable[..., Any], Callable[[random.Random], tuple]]]


def _int_in(lo: int, hi: int) -> Callable[[random.Random], tuple]:
    return lambda rng: (rng.randint(lo, hi),)


def _int_list(rng: random.Random) -> tuple:
    return ([rng.randint(-20, 20) for _ in range(rng.randint(1, 6))],)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 5)))


def _add(rng):
    k = rng.randint(1, 9)
    return (f"add_{k}", ["x"], f"returns x plus {k}", f"return x + {k}", lambda x: x + k, _int_in(-50, 50))


def _mul(rng):
    k = rng.randint(2, 9)
    return (f"times_{k}", ["x"], f"returns x times {k}", f"return x * {k}", lambda x: x * k, _int_in(-30, 30))


def _clamp(rng):
    lo = rng.randint(-10, 0)
    hi = rng.randint(1, 10)
    name = f"clamp_{-lo}_{hi}"
    return (name, ["x"], f"returns x limited to the range {lo} to {hi}", f"return max({lo}, min({hi}, x))",
            lambda x: max(lo, min(hi, x)), _int_in(-20, 20))


def _sum(rng):
    name = rng.choice(["total", "sum_all", "list_sum"])
    return (name, ["xs"], "returns the sum of the numbers in the list xs", "return sum(xs)", sum, _int_list)


def _largest(rng):
    name = rng.choice(["largest", "biggest", "max_of"])
    return (name, ["xs"], "returns the largest number in the non-empty list xs", "return max(xs)", max, _int_list)


def _count(rng):
    v = rng.randint(0, 3)
    make_input = lambda r: ([r.randint(0, 3) for _ in range(r.randint(0, 8))],)  # noqa: E731
    return (f"count_{v}", ["xs"], f"returns how many times {v} appears in the list xs", f"return xs.count({v})",
            lambda xs: xs.count(v), make_input)


def _digit_sum(rng):
    name = rng.choice(["digit_sum", "sum_digits"])
    return (name, ["n"], "returns the sum of the decimal digits of the non-negative integer n",
            "return sum(int(d) for d in str(n))", lambda n: sum(int(d) for d in str(n)), _int_in(0, 99999))


def _reverse(rng):
    name = rng.choice(["reverse", "backwards"])
    return (name, ["s"], "returns the string s reversed", "return s[::-1]", lambda s: s[::-1],
            lambda r: (_word(r),))


def _repeat(rng):
    k = rng.randint(2, 4)
    return (f"repeat_{k}", ["s"], f"returns the string s written {k} times", f"return s * {k}", lambda s: s * k,
            lambda r: (_word(r),))


def _divisible(rng):
    k = rng.randint(2, 9)
    return (f"divisible_by_{k}", ["n"], f"returns True when n is divisible by {k}, else False",
            f"return n % {k} == 0", lambda n: n % k == 0, _int_in(-60, 60))


FAMILIES = [Family(f.__name__.strip("_"), f) for f in
            (_add, _mul, _clamp, _sum, _largest, _count, _digit_sum, _reverse, _repeat, _divisible)]


def make_problem(rng: random.Random) -> dict[str, Any]:
    family = rng.choice(FAMILIES)
    fn, args, does, body, reference, make_input = family.make(rng)
    signature = f"{fn}({', '.join(args)})"
    tests, seen = [], set()
    for _ in range(50):  # distinct inputs; a family with few possible inputs may give fewer
        inputs = make_input(rng)
        key = repr(inputs)
        if key in seen:
            continue
        seen.add(key)
        call = f"{fn}({', '.join(repr(a) for a in inputs)})"
        tests.append(f"assert {call} == {reference(*inputs)!r}")
        if len(tests) == TESTS_PER_PROBLEM:
            break
    solution = f"def {signature}:\n    {body}\n"
    return {
        "prompt": f"Write a Python function {signature} that {does}",
        "answer": f"```python\n{solution}```",
        "tests": tests,
        "family": family.name,
    }


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_problem(rng) for _ in range(n)]


def write_split(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the tiny code task (train.jsonl, test.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("data/tiny_code"))
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Train and test come from separate streams, so neither depends on the other's size.
    write_split(generate(args.train, args.seed), args.out / "train.jsonl")
    write_split(generate(args.test, args.seed + 1), args.out / "test.jsonl")
    print(f"wrote {args.train} train and {args.test} test problems to {args.out}")


if __name__ == "__main__":
    main()
