"""SFT: supervised fine-tuning with the loss on completion tokens only (cold start, distillation).

What it does (DeepSeek-R1, arXiv 2501.12948, 2.3.1 and 2.4): fine-tunes a model on a dataset of
`prompt`/`completion` columns (the prompt goes through the same template as RL prompts) or chat
`messages` (the last message is the answer), from a JSONL/parquet file or a Hub dataset. The loss
is the token-mean negative log-likelihood of the completion tokens over each whole batch; prompt
tokens are context only. Batches are length-bucketed. Samples longer than `data.max_length` are
refused (the default, naming how many), truncated or dropped, as configured, before training.
Held-out accuracy and mean response length are measured before and after through the rollout
engines, as the RL recipes measure them. A checkpoint is saved every `save_every` steps; a stopped
run continues from the last one with `resume=true` and ends as an uninterrupted run would.

How it departs from the paper: R1's cold-start set is thousands of long readable CoTs collected
by few-shot prompting and human post-processing, and its stage-3 SFT runs 2 epochs over 800k
samples; the tiny default fine-tunes on a few hundred generated careful-procedure samples. The
learner is accelerate in this process (no Ray actor: supervised steps need no rollouts).

Launch:
    rlkit run sft --config recipes/configs/sft_tiny.yaml output_dir=runs/sft_tiny
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores

import random  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import ray  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rlkit import checkpoint  # noqa: E402
from rlkit.actors import init_ray  # noqa: E402
from rlkit.config import ModelConfig, save  # noqa: E402
from rlkit.heldout import EvalConfig, accuracy_change, evaluate_model, load_heldout  # noqa: E402
from rlkit.inputs import resolve_model  # noqa: E402
from rlkit.logging import MetricsLogger  # noqa: E402
from rlkit.models import context_length, load_tokenizer  # noqa: E402
from rlkit.reports import write_curves, write_model_bars, write_summary  # noqa: E402
from rlkit.sft.config import OptimConfig, SFTDataConfig  # noqa: E402
from rlkit.sft.data import (SFTDataError, batches_after, check_lengths, collate, length_bucketed_batches,  # noqa: E402
                            load_sft_rows, tokenize_examples)
from rlkit.sft.trainer import SupervisedLearner  # noqa: E402


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/sft"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    eval_before: bool = True  # also measure the model before training (`before` in summary.json)
    resume: bool = False  # continue from the last checkpoint in output_dir (same data and settings)
    save_every: int = 200  # optimizer steps between checkpoints (0 = only the final one); the last 2 are kept
    log_every: int = 1
    ray_address: str = ""  # "" starts a local Ray for the evaluation engines
    tensorboard: bool = False
    report: bool = True


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    # Everything that can be wrong with the data is checked here, before any training or actor.
    if not cfg.data.train:
        raise SystemExit("sft: data.train is empty; give a JSONL/parquet file or a Hub dataset")
    cfg.model.path = resolve_model(cfg.model.path)
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    window = context_length(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    max_length = cfg.data.max_length or window or 2048
    try:
        rows, fmt = load_sft_rows(cfg.data.train, prompt_column=cfg.data.prompt_column,
                                  completion_column=cfg.data.completion_column,
                                  messages_column=cfg.data.messages_column)
        if cfg.data.max_examples:
            rows = rows[: cfg.data.max_examples]
        examples = tokenize_examples(rows, tokenizer, fmt=fmt, template=cfg.data.template,
                                     prompt_column=cfg.data.prompt_column,
                                     completion_column=cfg.data.completion_column,
                                     messages_column=cfg.data.messages_column, source=cfg.data.train)
        lengths = check_lengths(examples, max_length, cfg.data.overlong, source=cfg.data.train)
    except SFTDataError as e:
        raise SystemExit(f"sft: {e}") from None
    examples = lengths.kept
    batches_per_epoch = max(1, len(examples) // cfg.optim.batch_size)
    total_steps = cfg.optim.max_steps or cfg.optim.epochs * batches_per_epoch
    heldout = load_heldout(cfg.eval, tokenizer)
    print(f"sft: {len(examples)} examples ({fmt}; {lengths.truncated} truncated, {lengths.dropped} dropped, "
          f"longest {lengths.longest} tokens), {total_steps} steps of {cfg.optim.batch_size}")

    learner = SupervisedLearner(cfg.model.path, cfg.optim, total_steps=total_steps, dtype=cfg.model.dtype,
                                seed=cfg.seed, trust_remote_code=cfg.model.trust_remote_code)
    # weights, optimizer and RNG restored; the learning rate follows the step
    resumed_from, step, driver_state = checkpoint.resume_from(cfg.output_dir, cfg.resume, learner)
    losses, before = driver_state.get("losses", []), driver_state.get("before", {})
    if resumed_from is not None:
        print(f"sft: resumed from {resumed_from} at step {step}")
    logger = MetricsLogger(cfg.output_dir, tensorboard=cfg.tensorboard, resume=resumed_from is not None,
                           start_step=step)
    save(cfg, f"{cfg.output_dir}/config.yaml")
    owns_ray = heldout and not ray.is_initialized()
    if heldout:
        init_ray(cfg.ray_address)
    if heldout and cfg.eval_before and resumed_from is None:
        before = evaluate_model(cfg.model.path, heldout, cfg.eval, seed=cfg.seed, dtype=cfg.model.dtype)
        logger.log(0, {"eval/accuracy": before["accuracy"], "eval/response_length": before["mean_length"]})

    # -------------------------------------------------------------------------- loop
    # Each epoch's batch order depends on (seed, epoch) only: a resumed run skips the batches trained
    # before its checkpoint and takes the ones an uninterrupted run would.
    lengths_in_tokens = [len(e.input_ids) for e in examples]

    def epoch_batches(epoch: int) -> list[list[int]]:
        shuffle = random.Random(cfg.seed * 100_003 + epoch)
        return length_bucketed_batches(lengths_in_tokens, cfg.optim.batch_size, shuffle,
                                       drop_last=len(examples) >= cfg.optim.batch_size)

    bar = tqdm(total=total_steps, initial=step, desc="sft", dynamic_ncols=True)
    for batch_rows in batches_after(epoch_batches, skip=step):
        if step >= total_steps:
            break
        t0 = time.perf_counter()
        metrics = learner.sft_step(collate([examples[i] for i in batch_rows], tokenizer.pad_token_id))
        metrics["time/step_s"] = time.perf_counter() - t0
        step += 1
        losses.append(metrics["sft/loss"])
        if step % cfg.log_every == 0 or step == total_steps:
            logger.log(step, metrics)
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            checkpoint.save(checkpoint.step_dir(cfg.output_dir, step), learners=learner, tokenizer=tokenizer,
                            driver_state={"step": step, "losses": losses, "before": before})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}")
    bar.close()
    final_dir = checkpoint.save(checkpoint.step_dir(cfg.output_dir, step), learners=learner, tokenizer=tokenizer,
                                driver_state={"step": step, "losses": losses, "before": before})

    # ----------------------------------------------------------------------- cleanup
    after = evaluate_model(str(final_dir), heldout, cfg.eval, seed=cfg.seed, dtype=cfg.model.dtype) if heldout else {}
    if after:
        logger.log(step, {"eval/accuracy": after["accuracy"], "eval/response_length": after["mean_length"]})
    logger.close()
    if owns_ray:
        ray.shutdown()
    tail = losses[-max(1, len(losses) // 10):]
    summary = {"model": cfg.model.path, "data": cfg.data.train, "format": fmt, "examples": len(examples),
               "truncated": lengths.truncated, "dropped": lengths.dropped, "steps": step,
               "final_loss": sum(tail) / len(tail), "before": before, "after": after, "checkpoint": str(final_dir)}
    write_summary(cfg.output_dir, summary)
    if cfg.report:
        write_curves(logger.path, f"{cfg.output_dir}/report.png", [("sft/loss", "completion NLL"), ("lr", "lr")],
                     title="SFT")
        if before and after:
            write_model_bars([{"name": "before", **before}, {"name": "after", **after}],
                             f"{cfg.output_dir}/report_eval.png", title="SFT: held-out before / after")
    print(f"sft: loss {summary['final_loss']:.4f}; accuracy {accuracy_change(before, after)}; "
          f"checkpoint {final_dir}")
    return summary


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
