"""Rejection sampling: N samples per prompt from a checkpoint, keep the ones that pass every filter.

What it does (DeepSeek-R1, arXiv 2501.12948, 2.3.3; Kimi k1.5's shortest rejection sampling,
arXiv 2501.12599, 2.4): samples `rejection.samples_per_prompt` completions for each prompt through
the rollout engines (Ray actors, engine `rollout.engine`: `hf` or any registered one), scores
them with the configured rewards, and keeps those that pass every filter in `rejection.filters`
(correct answer, R1 format, language consistency, length limits and a finished sample, no code
blocks, no duplicates; `rlkit.rejection`). A selection rule then picks the training samples
(`all`, `up_to_k` per prompt, or the `shortest` k per prompt). Writes `dataset.jsonl` (prompt,
completion, answer, tokens and every other prompt column; loadable by `datasets` and by the `sft`
recipe), optionally `pairs.jsonl` for DPO, and `summary.json` with `prompts`, `samples`, `kept`,
the drops per filter and a re-verification of the written file (every kept completion scored
again from disk, duplicate prompt/completion pairs counted, prompts represented).

How it departs from the paper: R1 also mixes in ~200k non-reasoning samples and uses a generative
judge for answers that rules cannot check; here every filter is rule-based, and non-reasoning
data can be added at the SFT step (the r1_pipeline recipe's `rejection_sft.extra_data`).

Launch (a checkpoint is `model.path`; the tiny config trains none, it samples the base):
    rlkit run rejection_sampling --config recipes/configs/rejection_sampling_tiny.yaml output_dir=runs/rs_tiny
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import ray
from tqdm import tqdm

import rewards
from rlkit.actors import RolloutGroup, init_ray
from rlkit.config import DataConfig, ModelConfig, RewardConfig, RolloutConfig, save
from rlkit.data import build_problems, load_rows, reward_columns
from rlkit.inputs import resolve_model
from rlkit.logging import MetricsLogger
from rlkit.models import context_length, load_tokenizer
from rlkit.rejection import (Candidate, RejectionConfig, RejectionError, apply_filters, check_kept, needed_rewards,
                             preference_pairs, score_candidates, select)
from rlkit.reports import write_summary
from rlkit.rollout.engine import engine_setup
from rlkit.types import GenerationRequest, SamplingParams


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/rejection_sampling"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(test=""))  # data.train: the prompts
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    ray_address: str = ""
    report: bool = True


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    cfg.model.path = resolve_model(cfg.model.path)
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    window = context_length(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    rj = cfg.rejection
    rows = load_rows(cfg.data.train, required=[cfg.data.prompt_column, cfg.data.answer_column])
    if rj.max_prompts:
        rows = rows[: rj.max_prompts]
    problems = build_problems(rows, tokenizer, prompt_column=cfg.data.prompt_column, template=cfg.data.template,
                              max_prompt_tokens=window - cfg.rollout.max_new_tokens if window else None,
                              source=cfg.data.train, answer_column=cfg.data.answer_column)
    accuracy = cfg.reward.accuracy
    names = list(dict.fromkeys(needed_rewards(rj, accuracy) + list(cfg.reward.weights)))
    for name in names:
        rewards.get(name)  # an unknown reward is an error now, not after sampling
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                              top_p=cfg.rollout.top_p, seed=cfg.seed)
    logger = MetricsLogger(cfg.output_dir, tensorboard=False)
    save(cfg, f"{cfg.output_dir}/config.yaml")

    engine = engine_setup(cfg.rollout, cfg.model, seed=cfg.seed)  # checked here, before any actor starts

    owns_ray = not ray.is_initialized()
    init_ray(cfg.ray_address)
    rollouts = RolloutGroup(cfg.rollout.num_actors, engine.name, engine.kwargs, num_gpus=engine.num_gpus)

    # -------------------------------------------------------------------------- loop
    n = rj.samples_per_prompt
    cands: list[Candidate] = []
    bar = tqdm(total=len(problems), desc="rejection_sampling", dynamic_ncols=True)
    for call, start in enumerate(range(0, len(problems), rj.prompts_per_call)):
        t0 = time.perf_counter()
        chunk = problems[start : start + rj.prompts_per_call]
        samples = rollouts.generate([GenerationRequest(prompt_ids=p.prompt_ids, n=n) for p in chunk],
                                    SamplingParams(**{**sampling.__dict__, "seed": cfg.seed + call}))
        new = [Candidate(problem=p.index, prompt=str(p.columns[cfg.data.prompt_column]), completion=r.text,
                         tokens=r.length, finish_reason=r.finish_reason, answer=p.columns["answer"])
               for p, r in zip([p for p in chunk for _ in range(n)], samples)]
        score_candidates(new, reward_columns(chunk, n), names, rj)
        cands += new
        logger.log(call + 1, {
            "samples": len(cands),
            "chunk/accuracy": sum((c.scores[accuracy] or 0.0) > 0.5 for c in new) / len(new),
            "chunk/mean_tokens": sum(c.tokens for c in new) / len(new),
            "time/generate_s": time.perf_counter() - t0,
        })
        bar.update(len(chunk))
    bar.close()
    for actor in rollouts.actors:
        ray.kill(actor)
    if owns_ray:
        ray.shutdown()

    keep, dropped = apply_filters(cands, rj, accuracy)
    chosen = select(cands, keep, rj.selection, rj.k)
    with open(f"{cfg.output_dir}/dataset.jsonl", "w") as f:
        for i in chosen:
            f.write(json.dumps(_row(cands[i], problems, cfg)) + "\n")
    pairs = preference_pairs(cands, keep, accuracy, length_ratio=rj.pair_length_ratio) if rj.pairs else []
    if rj.pairs:
        with open(f"{cfg.output_dir}/pairs.jsonl", "w") as f:
            for w, l in pairs:
                f.write(json.dumps({"prompt": cands[w].prompt, "chosen": cands[w].completion,
                                    "rejected": cands[l].completion, "answer": cands[w].answer,
                                    "chosen_tokens": cands[w].tokens, "rejected_tokens": cands[l].tokens}) + "\n")

    # ----------------------------------------------------------------------- cleanup
    summary = {
        "model": cfg.model.path, "prompts": len(problems), "samples": len(cands),
        "passed_filters": sum(keep), "kept": len(chosen), "selection": rj.selection, "dropped_by": dropped,
        "sample_accuracy": sum((c.scores[accuracy] or 0.0) > 0.5 for c in cands) / max(1, len(cands)),
        "mean_tokens_all": sum(c.tokens for c in cands) / max(1, len(cands)),
        "mean_tokens_kept": sum(cands[i].tokens for i in chosen) / max(1, len(chosen)),
        "pairs": len(pairs),
        **reverify(f"{cfg.output_dir}/dataset.jsonl", accuracy),
    }
    write_summary(cfg.output_dir, summary)
    if cfg.report:
        write_report(cands, keep, chosen, dropped, f"{cfg.output_dir}/report.png")
    print(f"rejection_sampling: kept {summary['kept']} of {summary['samples']} samples "
          f"({summary['prompts_represented']} of {summary['prompts']} prompts represented); dropped by {dropped}")
    try:
        check_kept(len(chosen), len(cands), len(problems), dropped)
    except RejectionError as e:
        raise SystemExit(f"rejection_sampling: {e}") from None
    return summary


def _row(c: Candidate, problems, cfg: Config) -> dict:
    extra = {k: v for k, v in problems[c.problem].columns.items() if k not in ("prompt", "completion", "answer")}
    return {**extra, "prompt": c.prompt, "completion": c.completion, "answer": c.answer, "tokens": c.tokens}


def reverify(path: str, accuracy: str) -> dict:
    """Score the written file again from disk: every kept completion must still verify."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        return {"reverified_correct": 0, "duplicate_pairs": 0, "prompts_represented": 0}
    scores = rewards.get(accuracy)([r["completion"] for r in rows], answer=[r["answer"] for r in rows],
                                   prompts=[r["prompt"] for r in rows])
    pairs = Counter((r["prompt"], r["completion"]) for r in rows)
    return {"reverified_correct": sum(1 for s in scores if s is not None and s > 0.5),
            "duplicate_pairs": sum(c - 1 for c in pairs.values()),
            "prompts_represented": len({r["prompt"] for r in rows})}


def write_report(cands, keep, chosen, dropped, out_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = ["sampled", *[f"-{k}" for k in dropped], "passed", "selected"]
    values = [len(cands), *dropped.values(), sum(keep), len(chosen)]
    axes[0].bar(range(len(values)), values, color=["tab:gray"] + ["tab:red"] * len(dropped) + ["tab:green"] * 2)
    axes[0].set_xticks(range(len(values)), labels, rotation=30, ha="right")
    axes[0].set_title("samples through the filters")
    axes[1].hist([[c.tokens for c in cands], [cands[i].tokens for i in chosen]], bins=30, label=["all", "selected"])
    axes[1].set_title("completion tokens")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
