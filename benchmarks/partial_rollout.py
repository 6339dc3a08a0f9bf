"""Partial rollouts against whole-batch rollouts on a long-tail length workload, interleaved.

Workload: every iteration starts --B new groups of --G samples. Each sample gets a target
length drawn from a long-tail distribution: with probability 1 - --long-frac a short answer,
uniform in [0.75, 1.25] x --short tokens; otherwise a long one, uniform in
[--long-min, --long-max] x --short tokens. A sample ends exactly at its target: the engine
honours a per-request cap (`GenerationRequest.meta["max_new_tokens"]`, finish reason
"length"), and the benchmark model cannot sample EOS (its output layer stops one id short of
the tokenizer's <eos>), so the drawn lengths are the real lengths and both modes generate the
same number of tokens for the same iteration's samples. Sampling is real: temperature 1 over
a random Qwen3-MoE of the embedded tiny base's shape (rlkit.models.tiny_moe_config; --hidden
and --layers change it), or over --model if given (then EOS may end a sample before its target).

- whole: one engine call per iteration with no token budget; the call lasts as long as its
  longest sample (the engine's batch shrinks as samples end, but the few long ones decode
  alone for most of the steps). Completed tokens: every sample's.
- partial: rlkit.rollout.partial.PartialRolloutBuffer with --budget new tokens per trajectory
  per iteration, all of an iteration's requests in one engine call (as rlkit.collect does);
  resumed segments re-prefill prompt + prefix (the HF engine keeps no KV cache between calls,
  and that cost is counted). Completed tokens: those of the groups the buffer hands out (all G
  members finished), as a trainer would receive them.
- partial_split: the same with resumed segments and fresh samples in two engine calls, which
  spares fresh prompts the left padding to the resumed prefixes' width in the prefill (see
  PartialMode).

All modes use one engine in one process (no Ray: this measures rollout scheduling, not
transport) and the same targets for iteration i; every iteration starts --B new groups in each
mode (the partial buffers carry the unfinished ones). The modes take turns within each
iteration (who goes first rotates); the first --warmup iterations are not timed (a partial
buffer needs about long-max x short / budget iterations to reach its steady state). Every
sample is its own n=1 request in all modes so that each can carry its own target.

Run:
    python benchmarks/partial_rollout.py --B 8 --G 8 --budget 32 --short 24 --iters 10

Printed: per-iteration tokens and seconds of each mode, per-mode totals and tokens/s,
`speedup_split=` (partial_split / whole), and last `speedup=X` = partial tokens/s / whole tokens/s.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlkit.rollout.hf import HFEngine  # noqa: E402
from rlkit.rollout.partial import META_KEY, PartialRolloutBuffer  # noqa: E402
from rlkit.types import GenerationRequest, SamplingParams  # noqa: E402

WORDS = ("<pad> <unk> <think> </think> <answer> </answer> What is plus minus times the answer so . , ? : "
         "0 1 2 3 4 5 6 7 8 9 <eos>").split()  # <eos> last: the model's vocabulary stops before it


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="HF model directory (default: a random tiny MoE, EOS unreachable)")
    ap.add_argument("--B", type=int, default=8, help="new groups per iteration")
    ap.add_argument("--G", type=int, default=8, help="samples per group")
    ap.add_argument("--budget", type=int, default=32, help="partial: new tokens per trajectory per iteration")
    ap.add_argument("--short", type=int, default=24, help="typical short answer length (tokens)")
    ap.add_argument("--long-frac", type=float, default=0.1, help="share of samples with a long answer")
    ap.add_argument("--long-min", type=float, default=5.0, help="long answers: at least this x --short")
    ap.add_argument("--long-max", type=float, default=8.0, help="long answers: at most this x --short")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per mode")
    ap.add_argument("--warmup", type=int, default=-1, help="untimed iterations per mode (-1: long-max*short/budget)")
    ap.add_argument("--hidden", type=int, default=128, help="random model hidden size")
    ap.add_argument("--layers", type=int, default=4, help="random model layers")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def build_random_model(path: Path, hidden: int, layers: int, max_positions: int) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3MoeForCausalLM

    from rlkit.models import tiny_moe_config

    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Digits(individual_digits=True)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    # vocab_size excludes <eos> (the last id): logits never cover it, lengths are the targets
    cfg = tiny_moe_config(len(vocab) - 1, hidden_size=hidden, num_hidden_layers=layers,
                          intermediate_size=2 * hidden, moe_intermediate_size=hidden,
                          max_position_embeddings=max_positions)
    model = Qwen3MoeForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def draw_targets(rng: random.Random, args) -> list[int]:
    """One long-tail target length per sample of one iteration (B*G of them)."""
    out = []
    for _ in range(args.B * args.G):
        if rng.random() < args.long_frac:
            out.append(round(rng.uniform(args.long_min, args.long_max) * args.short))
        else:
            out.append(round(rng.uniform(0.75, 1.25) * args.short))
    return out


def split_by_member(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    """One n=1 request per member, capped at that member's target (meta["targets"])."""
    out = []
    for req in requests:
        for m in req.meta[META_KEY]["members"]:
            meta = dict(req.meta)
            meta[META_KEY] = {"group": req.meta[META_KEY]["group"], "members": [m]}
            meta["max_new_tokens"] = req.meta["targets"][m]
            out.append(GenerationRequest(req.prompt_ids, n=1, prefix_ids=req.prefix_ids,
                                         prefix_logprobs=req.prefix_logprobs, prefix_versions=req.prefix_versions,
                                         meta=meta))
    return out


class PartialMode:
    """One partial-rollout scheduler: its own buffer and policy-version counter.

    calls="one": the iteration's requests in one engine call, as rlkit.collect does.
    calls="split": resumed segments and fresh samples in two calls. The HF engine left-pads one
    call's contexts to its longest and prefills them as one batch, so a fresh 8-token prompt
    next to a resumed 150-token prefix is computed at 150+ positions; two calls avoid that
    padding at the price of a second decode loop.
    """

    def __init__(self, engine, args, longest: int, sampling: SamplingParams, calls: str) -> None:
        self.engine, self.G, self.calls = engine, args.G, calls
        # the version bumps once per iteration, so a trajectory of `longest` tokens is
        # ceil(longest / budget) - 1 versions old when it finishes: the bound we allow
        self.buffer = PartialRolloutBuffer(args.budget, max_staleness=max(0, math.ceil(longest / args.budget) - 1),
                                           max_new_tokens=longest)
        self.sampling = self.buffer.sampling(sampling)
        self.version = 0

    def __call__(self, groups) -> tuple[int, float]:
        self.engine.version = self.version
        new = [GenerationRequest(p, n=self.G, meta={"targets": ts}) for p, ts in groups]
        t0 = time.perf_counter()
        reqs = split_by_member(self.buffer.requests_for_step(new, version=self.version))
        if self.calls == "split":
            out = (self.engine.generate([r for r in reqs if r.prefix_ids], self.sampling)
                   + self.engine.generate([r for r in reqs if not r.prefix_ids], self.sampling))
        else:
            out = self.engine.generate(reqs, self.sampling)
        done = self.buffer.add(out, version=self.version)
        elapsed = time.perf_counter() - t0
        self.version += 1
        return sum(r.length for g in done for r in g), elapsed


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    longest = math.ceil(args.long_max * args.short)
    warmup = args.warmup if args.warmup >= 0 else math.ceil(longest / args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_random_model(Path(tmp), args.hidden, args.layers, max_positions=longest + 64)
        engine = HFEngine(model, device=args.device, seed=args.seed)
    tok = engine.tokenizer
    prompts = [tok(f"What is {a} plus {b} ?")["input_ids"] for a in range(10) for b in range(10)]
    sampling = SamplingParams(max_new_tokens=longest, temperature=1.0)

    def whole(groups) -> tuple[int, float]:
        reqs = [GenerationRequest(p, n=1, meta={"max_new_tokens": t}) for p, ts in groups for t in ts]
        t0 = time.perf_counter()
        rollouts = engine.generate(reqs, sampling)
        return sum(r.length for r in rollouts), time.perf_counter() - t0

    modes = {"whole": whole, "partial": PartialMode(engine, args, longest, sampling, "one"),
             "partial_split": PartialMode(engine, args, longest, sampling, "split")}
    print(f"model={'random tiny MoE' if not args.model else args.model} params="
          f"{sum(p.numel() for p in engine.model.parameters()) / 1e6:.2f}M device={args.device} "
          f"threads={args.threads} B={args.B} G={args.G} budget={args.budget} short={args.short} "
          f"long={args.long_min}-{args.long_max}x@{args.long_frac} warmup={warmup} iters={args.iters}", flush=True)

    totals = {name: [0, 0.0] for name in modes}  # completed tokens, seconds
    names = list(modes)
    for it in range(warmup + args.iters):
        targets = draw_targets(rng, args)
        picks = [rng.randrange(len(prompts)) for _ in range(args.B)]
        groups = [(prompts[p], targets[g * args.G:(g + 1) * args.G]) for g, p in enumerate(picks)]
        timed = it >= warmup
        line = []
        for name in names[it % len(names):] + names[:it % len(names)]:  # rotate who goes first
            tokens, seconds = modes[name](groups)
            line.append(f"{name} {tokens} tok {seconds:.2f} s")
            if timed:
                totals[name][0] += tokens
                totals[name][1] += seconds
        m = modes["partial"].buffer.metrics()
        print(f"iter {it:2d}{'' if timed else ' (warm-up)'}: longest target {max(targets)} | " + " | ".join(line)
              + f" | partial buffered {m['partial/buffered']:.0f}", flush=True)

    rates = {}
    for name, (tokens, seconds) in totals.items():
        rates[name] = tokens / seconds
        print(f"{name:14s} completed_tokens={tokens} seconds={seconds:.2f} tokens_per_s={rates[name]:.1f}")
    print(f"speedup_split={rates['partial_split'] / rates['whole']:.2f}")
    speedup = rates["partial"] / rates["whole"]
    print(f"speedup={speedup:.2f}")
    return speedup


if __name__ == "__main__":
    main()
