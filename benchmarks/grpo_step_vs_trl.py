"""One GRPO step of rlkit against one of TRL's GRPOTrainer: same model, prompts and work, interleaved.

A step is: sample G completions for each of B prompts (temperature 1, at most --max-new-tokens
new tokens, fp32), score them with the same reward function, group-normalised advantages,
one optimizer update over all B*G completions (AdamW, same lr, clip 0.2, beta = 0 so no
reference model, token-mean loss, MoE router aux loss with the same coefficient).

- rlkit: the real stack of `recipes/r1_zero.py` (benchmarks/_workload.py: RLKitGRPO.step):
  Ray RolloutGroup (one engine actor: --engine hf, the transformers engine, or vllm) ->
  Scorer + assign_advantages on the driver ->
  pack_rollouts -> LearnerGroup.train_step (one accelerate learner, micro-batches of
  --micro-batch sequences) -> sync_weights (object store) back to the rollout actor.
- TRL: GRPOTrainer(use_vllm=False) on CPU with transformers `generate` (with --trl-vllm:
  use_vllm=True, vllm_mode="colocate", vLLM in TRL's process; if that cannot complete its first
  step, the benchmark prints why and compares against use_vllm=False); per_device_train_batch_size
  = --micro-batch and gradient_accumulation_steps = B*G / micro-batch, so generation_batch_size
  = steps_per_generation * micro-batch = B*G: one generation of B*G completions per optimizer
  step and no old-logprob pass (on-policy). loss_type is TRL's default ("dapo": token mean over
  the generation batch, same as rlkit's token_mean). Logging, saving and eval are off.

Both sides get the same CPU threads (--threads, default 1 as in rlkit's configs): TRL's process
via torch.set_num_threads, rlkit's rollout and learner actors via their `threads` setting (they
never run at the same time: the loop is synchronous). OMP_WAIT_POLICY defaults to PASSIVE for
both: with more than one thread, an idle actor's OpenMP workers otherwise spin for a while after
each call and take the cores the busy actor needs. Timing: both are built once and warmed up with one step; then each round
runs --steps-per-round rlkit steps, then as many TRL steps (TRL runs inside `trainer.train()`,
rlkit's rounds run from a TrainerCallback between TRL steps, outside TRL's timed interval).
A TRL step is the wall time from the end of the previous one (or of the rlkit round) to
`on_step_end`, so it includes its data loading, generation, scoring, forward/backward, optimizer.

Run:
    python benchmarks/grpo_step_vs_trl.py --model data/models/tiny-moe --data data/tiny_math/train.jsonl \
        --B 8 --G 8 --max-new-tokens 96 --rounds 5 --steps-per-round 2
    python benchmarks/grpo_step_vs_trl.py ... --engine vllm --trl-vllm      # the vLLM row

The last line printed is `speedup=X` = TRL median step time / rlkit median step time.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; Ray actors inherit it
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="data/models/tiny-moe")
    ap.add_argument("--data", default="data/tiny_math/train.jsonl")
    ap.add_argument("--B", type=int, default=8, help="prompts per step")
    ap.add_argument("--G", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps-per-round", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward, both sides")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    ap.add_argument("--rewards", default="math_accuracy=1,think_format=1",
                    help="name=weight,...: one combined reward function, used by both sides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rlkit's rollout engine")
    ap.add_argument("--trl-vllm", action="store_true", help="TRL with use_vllm=True, vllm_mode='colocate'")
    args = ap.parse_args(argv)
    if (args.B * args.G) % args.micro_batch:
        ap.error(f"--micro-batch {args.micro_batch} must divide B*G = {args.B * args.G}")
    return args


def build_trl(args, problems, reward_fn, on_step, *, use_vllm: bool = False):
    """A GRPOTrainer doing the same per-step work; `on_step(step, seconds)` is called after each step."""
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlkit.config import AlgoConfig
    from rlkit.models import load_model, load_tokenizer

    algo = AlgoConfig()
    n = args.B * args.G
    rows = [{"prompt": p.prompt, **{k: v for k, v in p.columns.items() if k != "prompt"}} for p in problems]
    dataset = datasets.Dataset.from_list(rows)
    config = GRPOConfig(
        output_dir="/tmp/grpo_step_vs_trl",
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, use_vllm=use_vllm,
        vllm_mode="colocate",  # vLLM in the trainer's process, TRL's default memory share (0.3)
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=n // args.micro_batch,
        num_generations=args.G, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        beta=0.0, num_iterations=1, epsilon=algo.clip_low, epsilon_high=algo.clip_high,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, router_aux_loss_coef=algo.router_aux_coef,
        max_steps=1 + args.rounds * args.steps_per_round, seed=args.seed,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
    )
    import trl

    print(f"trl {trl.__version__}: loss_type={config.loss_type} scale_rewards={config.scale_rewards} "
          f"per_device_train_batch_size={config.per_device_train_batch_size} "
          f"gradient_accumulation_steps={config.gradient_accumulation_steps} "
          f"generation_batch_size={config.generation_batch_size} steps_per_generation={config.steps_per_generation} "
          f"optim={config.optim} beta={config.beta} use_vllm={config.use_vllm} device={config.device}", flush=True)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, dtype=torch.float32)

    class Timer(TrainerCallback):
        def __init__(self):
            self.mark = None

        def on_train_begin(self, a, state, control, **kw):
            self.mark = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            seconds = time.perf_counter() - self.mark
            on_step(state.global_step, seconds)  # may run an rlkit round: not counted for TRL
            self.mark = time.perf_counter()

    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Timer()])
    # generation and completion-length bookkeeping, read after each step for the report
    gen = {"s": 0.0}
    inner = trainer._generate_single_turn

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            gen["s"] += time.perf_counter() - t

    trainer._generate_single_turn = timed_generate
    return trainer, gen


def main(argv=None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    import rewards
    from _workload import RLKitGRPO, load_problems, parse_weights

    weights = parse_weights(args.rewards)
    problems = load_problems(args.data, args.model, max_new_tokens=args.max_new_tokens)
    if len(problems) < args.B:
        raise SystemExit(f"{args.data} has {len(problems)} prompts, fewer than B={args.B}")
    reward_fn = rewards.combine(weights)

    print(f"model={args.model} data={args.data} ({len(problems)} prompts) B={args.B} G={args.G} "
          f"max_new_tokens={args.max_new_tokens} micro_batch={args.micro_batch} threads={args.threads} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
          f"rewards={weights} rounds={args.rounds} steps_per_round={args.steps_per_round}", flush=True)
    t = time.perf_counter()
    rl = RLKitGRPO(args.model, problems, weights, B=args.B, G=args.G, max_new_tokens=args.max_new_tokens,
                   lr=args.lr, micro_batch_size=args.micro_batch, threads=args.threads, seed=args.seed,
                   engine=args.engine)
    warm, _ = rl.step()
    print(f"rlkit built + warm-up step in {time.perf_counter() - t:.1f}s (warm-up step {warm.total_s:.2f}s)",
          flush=True)

    rl_times, trl_times = [], []
    trl_tokens, trl_gen = [], []
    k, R = args.steps_per_round, args.rounds
    state = {"gen_before": 0.0}

    def on_trl_step(step: int, seconds: float) -> None:
        metrics = trainer._metrics["train"]
        lengths = metrics.get("completions/mean_length", [])
        gen_s = gen["s"] - state["gen_before"]
        state["gen_before"] = gen["s"]
        if step == 1:
            print(f"trl warm-up step {seconds:.2f}s", flush=True)
        else:
            trl_times.append(seconds)
            trl_tokens.append(lengths[-1] * args.B * args.G if lengths else float("nan"))
            trl_gen.append(gen_s)
            print(f"  trl   step {step - 1:2d}: {seconds:6.2f}s  (generate {gen_s:5.2f}s, "
                  f"{trl_tokens[-1]:.0f} completion tokens)", flush=True)
        if (step - 1) % k == 0 and step < 1 + R * k:  # start of a round: rlkit's k steps first
            print(f"round {(step - 1) // k + 1}/{R}", flush=True)
            for _ in range(k):
                times, _m = rl.step()
                rl_times.append(times)
                print(f"  rlkit step {len(rl_times):2d}: {times.total_s:6.2f}s  (generate {times.generate_s:5.2f}s, "
                      f"score {times.score_s:.3f}s, learn {times.learn_s:5.2f}s, sync {times.sync_s:.3f}s, "
                      f"{times.completion_tokens} completion tokens)", flush=True)
        for key in list(metrics):  # logging is off, so nothing else would ever clear them
            metrics[key] = metrics[key][-1:]

    trl_vllm_failure = ""
    if args.trl_vllm:
        trainer, gen = build_trl(args, problems, reward_fn, on_trl_step, use_vllm=True)
        try:
            trainer.train()
        except Exception as e:  # noqa: BLE001 (reported, then the comparison runs without TRL's vLLM)
            if trl_times or rl_times:
                raise
            trl_vllm_failure = _failure(e)
            print(f"TRL use_vllm=True (colocate) failed in its first step: {trl_vllm_failure}", flush=True)
            del trainer
    if not args.trl_vllm or trl_vllm_failure:
        trainer, gen = build_trl(args, problems, reward_fn, on_trl_step)
        trainer.train()
    rl.close()

    def med(xs):
        return statistics.median(xs)

    rl_med = med([t.total_s for t in rl_times])
    trl_med = med(trl_times)
    import ray

    ray.shutdown()  # before the summary, so no actor log line lands after `speedup=`
    sys.stdout.flush()
    trl_side = "use_vllm=True" if args.trl_vllm and not trl_vllm_failure else "use_vllm=False"
    if trl_vllm_failure:
        trl_side += f" (use_vllm=True failed: {trl_vllm_failure})"
    print(f"engines: rlkit {args.engine}, trl {trl_side}")
    print(f"rlkit: median step {rl_med:.3f}s over {len(rl_times)} steps (generate {med([t.generate_s for t in rl_times]):.3f}s, "
          f"learn {med([t.learn_s for t in rl_times]):.3f}s, score {med([t.score_s for t in rl_times]):.4f}s, "
          f"sync {med([t.sync_s for t in rl_times]):.3f}s; {med([t.completion_tokens for t in rl_times]):.0f} "
          f"completion tokens/step)")
    print(f"trl:   median step {trl_med:.3f}s over {len(trl_times)} steps (generate {med(trl_gen):.3f}s, "
          f"rest {med([a - b for a, b in zip(trl_times, trl_gen)]):.3f}s; {med(trl_tokens):.0f} completion tokens/step)")
    # the two sides sample different completions, so also compare time per completion token
    rl_per_k = med([1000 * t.total_s / t.completion_tokens for t in rl_times])
    trl_per_k = med([1000 * s / n for s, n in zip(trl_times, trl_tokens)])
    print(f"per 1k completion tokens: rlkit {rl_per_k:.3f}s, trl {trl_per_k:.3f}s, ratio {trl_per_k / rl_per_k:.2f}")
    print(f"rlkit_median_s={rl_med:.3f} trl_median_s={trl_med:.3f}")
    print(f"speedup={trl_med / rl_med:.2f}")


def _failure(e: BaseException) -> str:
    """The error, the innermost frame in TRL and the one that raised (package/file:function), on one line."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    in_trl = [f for f in frames if "/trl/" in f.filename]

    def name(f):
        parts = Path(f.filename).parts
        package = next((p for p in ("trl", "vllm", "transformers", "torch") if p in parts), parts[-2])
        return f"{package}/{Path(f.filename).name}:{f.name}"

    path = ([name(in_trl[-1]), "..."] if in_trl else []) + [name(frames[-1])]
    return f"{type(e).__name__}: {e} [{' -> '.join(path)}]"


if __name__ == "__main__":
    main()
