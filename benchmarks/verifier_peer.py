"""rlkit's math verifier against Math-Verify, on public test suites, in one run.

Usage::

    python benchmarks/verifier_peer.py CASES.jsonl [MORE.jsonl ...] [--repeats 3]

Each JSONL row holds ``gold``, ``pred``, ``expected`` and where it came from.
Two layouts are understood:

- Math-Verify's own tests: ``source_file``, ``harness`` and, for rows run
  through its ``compare_strings`` helper, the ``config`` that test used
  (``match_types``, ``precision``, ``strict``, ``allow_set_relation_comp``).
- Other graders' tests (``source_repo``): Hendrycks MATH ``is_equiv`` and
  NeMo-Skills ``math_equal``. Both of those graders are symmetric, so a row
  agrees only when both argument orders give ``expected``.

Agreement (verdict == expected) is printed per source file and in total for:

- rlkit with its defaults (the headline), and rlkit with the policy a user of
  that test suite would pass (from the row's config, or the suite's conventions:
  Hendrycks orders lists);
- Math-Verify with its defaults, ``verify(parse(gold), parse(pred))``, and
  with each row's own harness and config. Bare answers of the other suites are
  wrapped in ``$...$`` for Math-Verify, which only reads LaTeX inside delimiters.

Speed, on the rows of the first file, like for like: both sides parse and
compare every one of its pairs (lenient location of the answer on both sides,
as for agreement), each side warmed up first, median of ``--repeats`` timed
passes, every parse cache emptied before every pass (rlkit's in this process
and in its workers, which stay up, so a pass never pays for starting a worker;
Math-Verify's own ``parse_latex_cached`` / ``parse_expr_cached``):

- ``loop``: ``is_equivalent(gold, pred)`` pair by pair, against
  Math-Verify ``verify(parse(gold), parse(pred))`` pair by pair;
- ``batch``: one ``is_equivalent_batch(golds, preds)`` call (the algebra
  spread over the worker pool), against the same Math-Verify loop.

(An earlier version timed ``accuracy_reward``, which scores a prediction
without a marked answer as 0 without comparing anything: 163 of the 270
predictions here, so it did much less work than Math-Verify.) Last: the
slowest single ``is_equivalent`` call on a set of pathological inputs (the
time bound at work). The final line is the summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards import math as rmath  # noqa: E402

try:
    import math_verify
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
except ImportError:  # optional: the dev extra
    math_verify = None

PATHOLOGICAL = [
    ("2^{2^{2^{2^{2^2}}}}", "2^{2^{2^{2^{2^3}}}}"),
    ("10^{10^{10^{10}}}", "10^{10^{10^{11}}}"),
    ("1000000!", "1000001!"),
    ("e^{e^{e^{e^{e}}}}", "e^{e^{e^{e^{e+1}}}}"),
    ("\\int_0^x e^{-t^2} dt", "\\frac{\\sqrt{\\pi}}{2}\\operatorname{erf}(x)+1"),
    ("(x+1)^{100000}", "(x+2)^{100000}"),
    ("\\sqrt{" * 200 + "2" + "}" * 200, "\\sqrt{" * 199 + "2" + "}" * 199),
    ("9" * 5000, "9" * 4999 + "8"),
    ("\\frac{\\sin(x)^{50}+\\cos(x)^{50}}{\\tan(x)^{30}}", "\\frac{\\sin(x)^{49}+\\cos(x)^{51}}{\\tan(x)^{31}}"),
]


def _text(x) -> str:
    return "" if x is None else str(x)


def _mathverify_harness(row: dict) -> bool:
    config = row.get("config")
    if config is None:  # verify(parse(gold), parse(pred))
        return bool(math_verify.verify(math_verify.parse(row["gold"]), math_verify.parse(row["pred"])))
    targets = [LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
               for t in config["match_types"]]
    gold = math_verify.parse(row["gold"], targets)
    pred = math_verify.parse(row["pred"], targets)
    return bool(math_verify.verify(gold, pred, float_rounding=config["precision"], strict=config["strict"],
                                   allow_set_relation_comp=config["allow_set_relation_comp"]))


def _mathverify_default(gold: str, pred: str) -> bool:
    return bool(math_verify.verify(math_verify.parse(gold), math_verify.parse(pred)))


def _row_policy(row: dict) -> dict:
    """The policy a user of this row's test suite would pass to rlkit."""
    config = row.get("config")
    if config is not None:
        # Math-Verify's "precision" is its float_rounding: decimals agree when rounded to that many places.
        return {"float_rounding": config["precision"], "set_relation": config["allow_set_relation_comp"] or None,
                "strict": config["strict"]}
    if "hendrycks" in row.get("source_repo", ""):
        return {"ordered_lists": True, "percent": "number"}
    if "NeMo" in row.get("source_repo", ""):
        return {"percent": "number"}
    return {}


def _symmetric(row: dict) -> bool:
    return "source_repo" in row and "Math-Verify" not in row["source_repo"]


def _agrees(row: dict, judge) -> bool:
    gold, pred = _text(row["gold"]), _text(row["pred"])
    verdicts = [judge(gold, pred)] + ([judge(pred, gold)] if _symmetric(row) else [])
    return all(v == row["expected"] for v in verdicts)


def _source(row: dict) -> str:
    return row.get("source_file") if "Math-Verify" in row.get("source_repo", "Math-Verify") else \
        f"{row['source_repo']}:{row.get('source_file', '')}"


def agreement(rows: list[dict]) -> dict[str, dict[str, list[int]]]:
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in rows:
        policy = {k: v for k, v in _row_policy(row).items() if v is not None}
        judges = {
            "rlkit": lambda g, p: rmath.is_equivalent(g, p),
            "rlkit_policy": lambda g, p, pol=policy: rmath.is_equivalent(g, p, **pol),
        }
        if math_verify is not None:
            wrap = (lambda s: f"${s}$") if _symmetric(row) else (lambda s: s)
            judges["mathverify"] = lambda g, p: _mathverify_default(wrap(g), wrap(p))
            if not _symmetric(row):
                judges["mathverify_harness"] = lambda g, p, row=row: _mathverify_harness(row)
        for name, judge in judges.items():
            cell = table[_source(row)][name]
            cell[0] += _agrees(row, judge)
            cell[1] += 1
    return table


def _median_time(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _clear_mathverify_caches() -> None:
    from math_verify import parser

    for name in ("parse_latex_cached", "parse_expr_cached"):
        cached = getattr(parser, name, None)
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def speed(rows: list[dict], repeats: int) -> dict[str, float]:
    golds, preds = [_text(r["gold"]) for r in rows], [_text(r["pred"]) for r in rows]
    loop = lambda: [rmath.is_equivalent(g, p) for g, p in zip(golds, preds)]  # noqa: E731
    batch = lambda: rmath.is_equivalent_batch(golds, preds)  # noqa: E731
    # Warm-up: imports, worker start-up, parser tables. Both paths must give the same verdicts.
    if loop() != batch():
        raise AssertionError("is_equivalent and is_equivalent_batch disagree on some pair")
    before = rmath.stats()["checks"]
    loop()
    compared = rmath.stats()["checks"] - before
    if compared != len(rows):
        raise AssertionError(f"rlkit compared {compared} of {len(rows)} pairs: not like for like")
    out = {"pairs": len(rows), "rlkit_loop_s": _median_time(loop, repeats, rmath.clear_caches),
           "rlkit_batch_s": _median_time(batch, repeats, rmath.clear_caches)}
    if math_verify is not None:
        mv = lambda: [_mathverify_default(g, p) for g, p in zip(golds, preds)]  # noqa: E731
        mv()
        out["mathverify_s"] = _median_time(mv, repeats, _clear_mathverify_caches)
    return out


def worst_case() -> tuple[float, str]:
    rmath.is_equivalent("1", "1")
    worst, which = 0.0, ""
    for gold, pred in PATHOLOGICAL:
        start = time.perf_counter()
        verdict = rmath.is_equivalent(gold, pred)
        took = time.perf_counter() - start
        if verdict:
            raise AssertionError(f"pathological pair judged equal: {gold[:40]!r} vs {pred[:40]!r}")
        if took > worst:
            worst, which = took, gold[:30]
    return worst, which


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", type=Path, help="JSONL files of gold/pred/expected rows")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per verifier (median is kept)")
    args = parser.parse_args()
    if math_verify is None:
        print("math-verify is not installed (pip install -e '.[dev]'): printing rlkit only, no speed ratio")

    files = {path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()] for path in args.cases}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    names = ["rlkit", "rlkit_policy", "mathverify", "mathverify_harness"]
    header = f"{'source':<58}" + "".join(f"{n:>20}" for n in names)
    for path, rows in files.items():
        print(f"\n== {path.name}: {len(rows)} rows ==")
        print(header)
        for source, cells in agreement(rows).items():
            line = f"{source:<58}"
            for name in names:
                if name in cells:
                    ok, n = cells[name]
                    totals[f"{path.name}:{name}"][0] += ok
                    totals[f"{path.name}:{name}"][1] += n
                    line += f"{f'{ok}/{n}':>20}"
                else:
                    line += f"{'-':>20}"
            print(line)
        line = f"{'TOTAL':<58}"
        for name in names:
            cell = totals.get(f"{path.name}:{name}")
            line += f"{f'{cell[0]}/{cell[1]}' if cell else '-':>20}"
        print(line)
    print("\nrlkit_policy: float_rounding (Math-Verify's precision)/strict/allow_set_relation_comp from each "
          "Math-Verify row's config; "
          "ordered_lists=True, percent='number' for Hendrycks; percent='number' for NeMo-Skills")

    first = next(iter(files))
    timing = speed(files[first], args.repeats)
    n = timing["pairs"]
    print(f"\n== speed on {first.name} ({n} pairs, median of {args.repeats}) ==")
    print(f"rlkit is_equivalent loop  {timing['rlkit_loop_s']:7.3f} s  {n / timing['rlkit_loop_s']:8.1f} checks/s")
    print(f"rlkit is_equivalent_batch {timing['rlkit_batch_s']:7.3f} s  {n / timing['rlkit_batch_s']:8.1f} checks/s")
    if "mathverify_s" in timing:
        print(f"Math-Verify parse+verify  {timing['mathverify_s']:7.3f} s  {n / timing['mathverify_s']:8.1f} checks/s")
    worst, which = worst_case()
    print(f"\nslowest pathological is_equivalent: {worst:.2f} s ({which!r}...); stats {rmath.stats()}")

    key = f"{first.name}:"
    ours, theirs = totals[key + "rlkit"], totals.get(key + "mathverify")
    summary = f"rlkit_agree={ours[0]}/{ours[1]}"
    if theirs:
        harness = totals[key + "mathverify_harness"]
        loop_x = timing["mathverify_s"] / timing["rlkit_loop_s"]
        batch_x = timing["mathverify_s"] / timing["rlkit_batch_s"]
        summary += (f" mathverify_agree={theirs[0]}/{theirs[1]} mathverify_own_harness_agree={harness[0]}/{harness[1]}"
                    f" speedup_loop={loop_x:.1f} speedup_batch={batch_x:.1f}")
    summary += f" worst_case_s={worst:.2f}"
    print(summary)


if __name__ == "__main__":
    main()
