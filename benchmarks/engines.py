"""The same generation requests through the transformers engine (`hf`) and the vLLM engine: tokens/s.

Workload: B prompts of the R1-Zero template from --data, G samples each, at most --max-new-tokens
new tokens, temperature --temperature, fp32. Each engine runs in its own Ray rollout actor with
--threads torch threads, as in the loop (`rlkit.actors.RolloutGroup`); the two are built first,
each gets one small warm-up call, then each serves all B*G samples in one timed call, hf first,
then vllm (never at the same time). Rate = completion tokens / wall seconds of that call: the two
engines draw different samples, so their completions differ in length, and tokens/s is what
compares.

Run:
    python benchmarks/engines.py --model data/models/tiny-moe --data data/tiny_math/train.jsonl \
        --B 64 --G 8 --max-new-tokens 96

The last line printed is `vllm_over_hf=X`, vLLM's tokens/s over the transformers engine's.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; Ray actors inherit it
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="data/models/tiny-moe")
    ap.add_argument("--data", default="data/tiny_math/train.jsonl")
    ap.add_argument("--B", type=int, default=64, help="prompts")
    ap.add_argument("--G", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of each engine's actor")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    import ray

    from _workload import load_problems
    from rlkit.actors import RolloutGroup, init_ray
    from rlkit.types import GenerationRequest, SamplingParams

    problems = load_problems(args.data, args.model, max_new_tokens=args.max_new_tokens)
    if len(problems) < args.B:
        raise SystemExit(f"{args.data} has {len(problems)} prompts, fewer than B={args.B}")
    requests = [GenerationRequest(p.prompt_ids, n=args.G) for p in problems[: args.B]]
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    print(f"model={args.model} B={args.B} G={args.G} max_new_tokens={args.max_new_tokens} "
          f"temperature={args.temperature} threads={args.threads} "
          f"prompt tokens/sample={sum(len(r.prompt_ids) for r in requests) / len(requests):.1f}", flush=True)

    init_ray(num_cpus=4)  # logical: both actors exist at once, they never run at the same time
    engines = {name: RolloutGroup(1, name, {"model_path": args.model, "seed": args.seed}, threads=args.threads)
               for name in ("hf", "vllm")}
    for name, group in engines.items():
        t = time.perf_counter()
        group.generate(requests[:2], sampling)  # waits for the engine to start, then one small warm-up call
        print(f"{name}: started + warm-up {time.perf_counter() - t:.1f}s", flush=True)

    rates = {}
    for name, group in engines.items():
        t = time.perf_counter()
        rollouts = group.generate(requests, sampling)
        seconds = time.perf_counter() - t
        tokens = sum(r.length for r in rollouts)
        rates[name] = tokens / seconds
        stops = sum(r.finish_reason == "stop" for r in rollouts) / len(rollouts)
        print(f"{name:5s}: {len(rollouts)} samples, {tokens} completion tokens "
              f"(mean {tokens / len(rollouts):.1f}, {stops:.0%} ended by EOS) in {seconds:.2f}s = "
              f"{rates[name]:.0f} tokens/s", flush=True)
    ray.shutdown()  # before the summary, so no actor log line lands after it
    sys.stdout.flush()
    print(f"vllm_over_hf={rates['vllm'] / rates['hf']:.2f}")


if __name__ == "__main__":
    main()
