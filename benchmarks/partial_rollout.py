"""Partial rollouts against whole-batch rollouts on a long-tail length workload, interleaved.

Both modes run the training loop's own scheduler, `rlkit.collect.Collector`, over one HF engine
in one process (no Ray: this measures rollout scheduling, not transport); one `collect()` call
is one training step, and between steps the engine gets a weight sync with the next version
(`load_weights` of the same state: the numbers stay, everything keyed on the version is reset
exactly as after a real optimizer step).

- whole: `Collector(partial=None)`: each step samples --in-flight x --B fresh groups of --G to
  completion in one engine call (the same number of sequences in flight as partial keeps), which
  lasts as long as its longest sample (the batch shrinks as samples end, but the few long ones
  decode alone for most of the step) and trains on all of them.
- partial: `Collector(partial=PartialRolloutBuffer(--budget))`, max_rounds 4 (the trainer's
  default): --in-flight x --B groups kept in flight (`partial.groups_in_flight`); each round is
  one engine call with the unfinished trajectories (resumed from prompt + prefix) and n=G
  requests for the new groups that refill the flight; rounds repeat within the step until --B groups are complete or 4 rounds ran. The
  rounds of one step share a version, so the engine resumes a trajectory from the keys/values it
  kept when the budget stopped it; the first round after a weight sync prefills prompt + prefix
  again (keys/values of the old weights are not reused).

Workload: every new group's G samples get target lengths drawn from a long-tail distribution:
with probability 1 - --long-frac a short answer, uniform in [0.75, 1.25] x --short tokens;
otherwise a long one, uniform in [--long-min, --long-max] x --short tokens. The n-th group a
mode starts gets the same prompt and targets in both modes. A sample ends exactly at its target
(the engine's per-sample cap `meta["max_new_tokens"] = [cap per sample]`, finish reason "length",
so a group still shares one prefill), because the random model cannot sample EOS (its output
layer stops one id short of the tokenizer's <eos>). Sampling is real: temperature 1 over a
random Qwen3-MoE of the tiny base's shape (rlkit.models.tiny_moe_config), or over --model (the
default is data/models/tiny-moe when it exists; then EOS may end a sample before its target).

Counted: tokens that train, per wall second of `collect()`: of the trajectories in the groups a
step hands to training, the tokens the loss keeps. With --stale-mode mask (the config default,
`partial.stale_mode`) a token sampled by an older version than the step's is masked out of the
loss, so only the step's own tokens count; with importance or keep every token trains (weighted
or off-policy). Whole-batch tokens are all the step's own. The modes take turns within each
iteration (who goes first alternates); the first --warmup iterations are not timed (the partial
buffer needs about long-max x short / budget rounds to reach its steady state).

Run:
    python benchmarks/partial_rollout.py --B 8 --G 8 --budget 32 --short 24 --iters 12
    python benchmarks/partial_rollout.py --stale-mode importance

Printed: per-iteration training tokens and seconds of each mode, per-mode totals (with the
model forwards per step: a decode step has a cost that hardly depends on the batch on a GPU, so
whole / partial forwards per step is what partial rollouts can save at most), tokens per
wall second and per CPU second of the process, `speedup_cpu=` (the same ratio in CPU time,
steadier than wall time when other jobs share the cores) and last `speedup=X` = partial tokens
per wall second / whole tokens per wall second.
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

from rlkit.collect import Collector  # noqa: E402
from rlkit.data import Problem  # noqa: E402
from rlkit.models import save_random_tiny_model  # noqa: E402
from rlkit.prompt_samplers import make_prompt_sampler  # noqa: E402
from rlkit.rollout.hf import HFEngine  # noqa: E402
from rlkit.rollout.partial import META_KEY, PartialRolloutBuffer  # noqa: E402
from rlkit.types import GenerationRequest, SamplingParams  # noqa: E402

SHIPPED_MODEL = ROOT / "data" / "models" / "tiny-moe"
WORDS = ("<pad> <unk> <think> </think> <answer> </answer> What is plus minus times the answer so . , ? : "
         "0 1 2 3 4 5 6 7 8 9 <eos>").split()  # <eos> last: the model's vocabulary stops before it
MAX_ROUNDS = 4  # rlkit.config.SamplingConfig.max_rounds


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="HF model directory (default: data/models/tiny-moe if it exists, "
                    "else a random tiny MoE of its shape with EOS unreachable)")
    ap.add_argument("--random-model", action="store_true", help="use the random model even if the shipped one exists")
    ap.add_argument("--B", type=int, default=8, help="groups per training step (kept in flight by partial)")
    ap.add_argument("--G", type=int, default=8, help="samples per group")
    ap.add_argument("--budget", type=int, default=32, help="partial: new tokens per trajectory per round")
    ap.add_argument("--short", type=int, default=24, help="typical short answer length (tokens)")
    ap.add_argument("--long-frac", type=float, default=0.1, help="share of samples with a long answer")
    ap.add_argument("--long-min", type=float, default=5.0, help="long answers: at least this x --short")
    ap.add_argument("--long-max", type=float, default=8.0, help="long answers: at most this x --short")
    ap.add_argument("--in-flight", type=int, default=3,
                    help="partial: groups generated at once, as a multiple of --B (partial.groups_in_flight)")
    ap.add_argument("--stale-mode", default="mask", choices=("mask", "importance", "keep"),
                    help="partial.stale_mode: which tokens of a partial trajectory train (mask: the step's own only)")
    ap.add_argument("--iters", type=int, default=12, help="timed training steps per mode")
    ap.add_argument("--warmup", type=int, default=-1,
                    help="untimed steps per mode (-1: enough rounds for the longest target, plus one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the same for both modes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def build_random_model(path: Path, max_positions: int) -> str:
    # the shipped base's shape; vocab_size excludes <eos> (the last id): logits never cover it,
    # so lengths are the targets
    return save_random_tiny_model(path, WORDS, vocab_size=len(WORDS) - 1, max_position_embeddings=max_positions)


class Targets:
    """The target lengths of the groups one mode starts, in start order (the same seed in every
    mode, so the n-th group gets the same targets whichever mode starts it)."""

    def __init__(self, args) -> None:
        self.rng, self.args = random.Random(args.seed), args

    def group(self) -> list[int]:
        a = self.args
        return [round(self.rng.uniform(a.long_min, a.long_max) * a.short) if self.rng.random() < a.long_frac
                else round(self.rng.uniform(0.75, 1.25) * a.short) for _ in range(a.G)]


class CappedGenerate:
    """The Collector's generate callable: each sample capped at its group member's target.

    Whole-batch requests are all new groups. Partial requests carry the buffer's tag (group id,
    members): a group id not seen before is a new group; a resumed or restarted member keeps its
    target."""

    def __init__(self, engine: HFEngine, args) -> None:
        self.engine, self.targets = engine, Targets(args)
        self.by_group: dict[int, list[int]] = {}

    def __call__(self, requests: list[GenerationRequest], sampling: SamplingParams):
        capped = []
        for req in requests:
            tag = req.meta.get(META_KEY)
            if tag is None:
                caps = self.targets.group()[: req.n]
            else:
                if tag["group"] not in self.by_group:
                    self.by_group[tag["group"]] = self.targets.group()
                caps = [self.by_group[tag["group"]][m] for m in tag["members"]]
            capped.append(GenerationRequest(req.prompt_ids, n=req.n, prefix_ids=req.prefix_ids,
                                            prefix_logprobs=req.prefix_logprobs, prefix_versions=req.prefix_versions,
                                            meta={**req.meta, "max_new_tokens": caps}))
        return self.engine.generate(capped, sampling)


class NoScore:
    """Rewards do not matter here: every sample scores 0, at no cost (the same in both modes)."""

    def score(self, rollouts, problems, group_size) -> dict[str, float]:
        for r in rollouts:
            r.reward = 0.0
        return {"time/reward_s": 0.0}


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    longest = math.ceil(args.long_max * args.short)
    warmup = args.warmup if args.warmup >= 0 else math.ceil(longest / args.budget / MAX_ROUNDS) + 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, label = args.model, args.model
        elif SHIPPED_MODEL.is_dir() and not args.random_model:
            model, label = str(SHIPPED_MODEL), "data/models/tiny-moe"
        else:
            model, label = build_random_model(Path(tmp), max_positions=longest + 64), "random tiny MoE (no EOS)"
        engine = HFEngine(model, device=args.device, seed=args.seed)
    state = engine.state_dict()
    tok = engine.tokenizer
    problems = [Problem(i, text, tok(text)["input_ids"], {})
                for i, text in enumerate(f"What is {a} plus {b} ?" for a in range(10) for b in range(10))]
    sampling = SamplingParams(max_new_tokens=longest, temperature=1.0)

    def collector(partial: PartialRolloutBuffer | None) -> Collector:
        sampler = make_prompt_sampler("shuffle", problems, seed=args.seed, difficulty_column="")
        # the same sequences in flight: partial keeps in_flight x B groups going, whole samples that many per step
        per_step = args.B if partial is not None else args.in_flight * args.B
        return Collector(CappedGenerate(engine, args), problems, NoScore(), sampler, group_size=args.G,
                         groups_per_step=per_step, sampling=sampling, max_rounds=MAX_ROUNDS, partial=partial,
                         groups_in_flight=args.in_flight * args.B)

    def training_tokens(groups, version: int) -> int:
        if args.stale_mode != "mask":
            return sum(r.length for g in groups for r in g)
        return sum(v == version for g in groups for r in g for v in r.versions)

    # the version bumps once per step and a step runs up to MAX_ROUNDS rounds of `budget` tokens,
    # so the longest target is at most ceil(longest / budget) - 1 versions old when it finishes
    buffer = PartialRolloutBuffer(args.budget, max_staleness=max(0, math.ceil(longest / args.budget) - 1),
                                  max_new_tokens=longest)
    modes = {"whole": collector(None), "partial": collector(buffer)}
    versions = dict.fromkeys(modes, 0)
    print(f"model={label} params={sum(p.numel() for p in engine.model.parameters()) / 1e6:.2f}M "
          f"device={args.device} threads={args.threads} B={args.B} G={args.G} budget={args.budget} "
          f"short={args.short} long={args.long_min}-{args.long_max}x@{args.long_frac} max_rounds={MAX_ROUNDS} "
          f"in_flight={args.in_flight}xB (both modes) stale_mode={args.stale_mode} warmup={warmup} iters={args.iters}",
          flush=True)

    totals = {name: [0, 0.0, 0.0, 0] for name in modes}  # training tokens, wall s, CPU s, model forwards
    forwards = [0]
    engine.model.register_forward_pre_hook(lambda module, inputs: forwards.__setitem__(0, forwards[0] + 1))
    names = list(modes)
    for it in range(warmup + args.iters):
        timed = it >= warmup
        line = []
        for name in names[it % 2:] + names[: it % 2]:  # alternate who goes first
            versions[name] += 1  # a weight sync before every step, as the trainer does
            engine.load_weights(state, versions[name])
            t0, c0, f0 = time.perf_counter(), time.process_time(), forwards[0]
            groups, metrics = modes[name].collect(versions[name])
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            tokens = training_tokens(groups, versions[name])
            sampled = sum(r.length for g in groups for r in g)
            line.append(f"{name} {tokens}/{sampled} tok {seconds:.2f} s ({metrics['batch/rounds']:.0f} rounds)")
            if timed:
                totals[name][0] += tokens
                totals[name][1] += seconds
                totals[name][2] += cpu
                totals[name][3] += forwards[0] - f0
        print(f"step {it:2d}{'' if timed else ' (warm-up)'}: " + " | ".join(line)
              + f" | partial buffered {buffer.num_unfinished}", flush=True)

    rates, cpu_rates = {}, {}
    for name, (tokens, seconds, cpu, calls) in totals.items():
        rates[name], cpu_rates[name] = tokens / seconds, tokens / cpu
        print(f"{name:8s} training_tokens={tokens} seconds={seconds:.2f} tokens_per_s={rates[name]:.1f} "
              f"cpu_seconds={cpu:.2f} tokens_per_cpu_s={cpu_rates[name]:.1f} "
              f"forwards_per_step={calls / args.iters:.0f} tokens_per_forward={tokens / calls:.1f}")
    # on a shared machine CPU time moves less than wall time with the other jobs' load
    print(f"speedup_cpu={cpu_rates['partial'] / cpu_rates['whole']:.2f}")
    speedup = rates["partial"] / rates["whole"]
    print(f"speedup={speedup:.2f}")
    return speedup


if __name__ == "__main__":
    main()
