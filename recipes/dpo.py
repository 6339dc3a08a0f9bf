"""DPO: direct preference optimisation on (prompt, chosen, rejected) completions.

What it does (arXiv 2305.18290; Kimi k1.5's long2short DPO, arXiv 2501.12599 2.4): minimises
-log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]) over
the pairs, sequence log-probs summed over completion tokens, the reference being the model before
training (frozen; its log-probs are computed once, up front). Pairs come from a JSONL with
`prompt`, `chosen`, `rejected` columns, e.g. the pairs.jsonl that `rejection_sampling` writes
with `rejection.pairs=true` (chosen = shortest correct, rejected = wrong or >= 1.5x longer).
Held-out accuracy and mean response length are measured before and after.

How it departs from the paper: `dpo.nll_coef` > 0 adds the chosen answers' token-mean NLL to
the loss (RPO, arXiv 2404.19733): on the tiny task plain DPO lowered the chosen answers with the
rejected ones and moved the model onto its sloppy guesses (held-out accuracy 0.96 -> 0.57 at lr
5e-5). Kimi's long2short DPO pairs are built the same way, from the model's own samples.

Launch (after `rlkit run rejection_sampling ... rejection.pairs=true output_dir=runs/rs`):
    rlkit run dpo --config recipes/configs/dpo_tiny.yaml dpo.pairs=runs/rs/pairs.jsonl output_dir=runs/dpo_tiny
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores

import random  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import ray  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rlkit import checkpoint  # noqa: E402
from rlkit.actors import init_ray  # noqa: E402
from rlkit.config import ModelConfig, save  # noqa: E402
from rlkit.data import load_rows  # noqa: E402
from rlkit.heldout import EvalConfig, accuracy_change, evaluate_model, load_heldout  # noqa: E402
from rlkit.inputs import resolve_model  # noqa: E402
from rlkit.logging import MetricsLogger  # noqa: E402
from rlkit.models import context_length, load_tokenizer  # noqa: E402
from rlkit.reports import write_curves, write_summary  # noqa: E402
from rlkit.sft.config import DPOConfig, OptimConfig  # noqa: E402
from rlkit.sft.data import (FORMAT_PROMPT_COMPLETION, SFTDataError, batches_after, check_lengths, collate,  # noqa: E402
                            tokenize_examples)
from rlkit.sft.trainer import SupervisedLearner  # noqa: E402


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/dpo"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, batch_size=16, micro_batch_size=16))
    eval: EvalConfig = field(default_factory=EvalConfig)
    eval_before: bool = True  # also measure the model before training (`before` in summary.json)
    resume: bool = False  # continue from the last checkpoint in output_dir (same pairs and settings)
    save_every: int = 200  # optimizer steps between checkpoints (0 = only the final one); the last 2 are kept
    ray_address: str = ""
    tensorboard: bool = False
    report: bool = True


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    if not cfg.dpo.pairs:
        raise SystemExit("dpo: dpo.pairs is empty; give a JSONL with prompt, chosen, rejected columns")
    cfg.model.path = resolve_model(cfg.model.path)
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    window = context_length(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    max_length = cfg.dpo.max_length or window or 2048
    d = cfg.dpo
    rows = load_rows(d.pairs, required=[d.prompt_column, d.chosen_column, d.rejected_column])
    sides = {}
    try:
        for side, column in (("chosen", d.chosen_column), ("rejected", d.rejected_column)):
            examples = tokenize_examples(rows, tokenizer, fmt=FORMAT_PROMPT_COMPLETION, template=d.template,
                                         prompt_column=d.prompt_column, completion_column=column,
                                         source=f"{d.pairs} ({side})")
            sides[side] = check_lengths(examples, max_length, "error", source=f"{d.pairs} ({side})").kept
    except SFTDataError as e:
        raise SystemExit(f"dpo: {e}") from None
    n_pairs = len(rows)
    total_steps = cfg.optim.max_steps or cfg.optim.epochs * max(1, n_pairs // cfg.optim.batch_size)
    heldout = load_heldout(cfg.eval, tokenizer)
    print(f"dpo: {n_pairs} pairs, {total_steps} steps of {cfg.optim.batch_size}, beta {d.beta}")

    learner = SupervisedLearner(cfg.model.path, cfg.optim, total_steps=total_steps, dtype=cfg.model.dtype,
                                seed=cfg.seed, reference=True, trust_remote_code=cfg.model.trust_remote_code)
    pad = tokenizer.pad_token_id
    ref = {side: learner.sequence_logprobs(collate(ex, pad), reference=True, mean=d.length_normalize)
           for side, ex in sides.items()}  # [n] each
    # the reference log-probs above came from the initial model, as they must on resume too
    resumed_from, step, driver_state = checkpoint.resume_from(cfg.output_dir, cfg.resume, learner)
    before = driver_state.get("before", {})
    if resumed_from is not None:
        print(f"dpo: resumed from {resumed_from} at step {step}")
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
    # Each epoch's order depends on (seed, epoch) only: a resumed run skips the batches trained before its
    # checkpoint and takes the ones an uninterrupted run would.
    def epoch_batches(epoch: int) -> list[list[int]]:
        order = list(range(n_pairs))
        random.Random(cfg.seed * 100_003 + epoch).shuffle(order)
        return [order[start : start + cfg.optim.batch_size] for start in range(0, n_pairs, cfg.optim.batch_size)]

    last: dict = {}
    bar = tqdm(total=total_steps, initial=step, desc="dpo", dynamic_ncols=True)
    for idx in batches_after(epoch_batches, skip=step):
        if step >= total_steps:
            break
        t0 = time.perf_counter()
        chosen = collate([sides["chosen"][i] for i in idx], pad)
        rejected = collate([sides["rejected"][i] for i in idx], pad)
        pick = torch.tensor(idx)
        last = learner.dpo_step(chosen, rejected, ref["chosen"][pick], ref["rejected"][pick], d.beta,
                                nll_coef=d.nll_coef, length_normalize=d.length_normalize)
        last["time/step_s"] = time.perf_counter() - t0
        step += 1
        logger.log(step, last)
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            checkpoint.save(checkpoint.step_dir(cfg.output_dir, step), learners=learner, tokenizer=tokenizer,
                            driver_state={"step": step, "before": before})
        bar.update(1)
        bar.set_postfix(loss=f"{last['dpo/loss']:.3f}", acc=f"{last['dpo/accuracy']:.2f}")
    bar.close()
    final_dir = checkpoint.save(checkpoint.step_dir(cfg.output_dir, step), learners=learner, tokenizer=tokenizer,
                                driver_state={"step": step, "before": before})

    # ----------------------------------------------------------------------- cleanup
    after = evaluate_model(str(final_dir), heldout, cfg.eval, seed=cfg.seed, dtype=cfg.model.dtype) if heldout else {}
    if after:
        logger.log(step, {"eval/accuracy": after["accuracy"], "eval/response_length": after["mean_length"]})
    logger.close()
    if owns_ray:
        ray.shutdown()
    summary = {"model": cfg.model.path, "pairs": n_pairs, "steps": step, "beta": d.beta,
               "final": {k: v for k, v in last.items() if k.startswith("dpo/")}, "before": before, "after": after,
               "checkpoint": str(final_dir)}
    write_summary(cfg.output_dir, summary)
    if cfg.report:
        write_curves(logger.path, f"{cfg.output_dir}/report.png",
                     [("dpo/loss", "DPO loss"), ("dpo/margin", "reward margin"),
                      ("dpo/accuracy", "pairs ranked right")],
                     title="DPO")
    print(f"dpo: accuracy {accuracy_change(before, after)}, mean length "
          f"{before.get('mean_length')} -> {after.get('mean_length')}; checkpoint {final_dir}")
    return summary


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
