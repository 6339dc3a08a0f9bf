"""R1-Zero: reinforcement learning straight from a base model, with rule-based rewards only.

What it does (DeepSeek-R1, arXiv 2501.12948, section 2.2): every step samples a group of G
completions for each of B prompts in the R1-Zero template, scores only the outcome (answer
accuracy + think/answer format, equal weights), turns the scores into group-relative
advantages (GRPO, arXiv 2402.03300), takes one clipped-surrogate optimizer step and pushes
the new weights to the rollout engines. Rollouts run in Ray actors (transformers engine by
default), the learner in Ray actors around an accelerate Learner. Held-out accuracy is
measured at step 0, every `eval_every` steps and at the end.

Before any actor starts, the config is checked (registry names, group_size >= 2), then the model,
tokenizer, datasets and their columns and the rewards; a bad one stops the run with one line.
`rlkit run` keeps each run in its own output_dir (see `rlkit.run`). The console shows one progress
bar (reward, held-out accuracy, response length, tokens/s) and a closing summary, also written to
output_dir/summary.json.

How it departs from the paper:
- One policy update per batch (on-policy, so the ratio is 1 at the start of each step) and
  β = 0 by default (no reference model), as in most open reproductions; set algo.kl_coef > 0
  for the paper's k3 KL term.
- Loss aggregation is `token_mean` over the whole batch (DAPO) rather than GRPO's per-sequence
  mean; `algo.aggregation=seq_mean` restores the paper's.
- The default config trains the embedded tiny MoE base on a synthetic arithmetic task so the
  whole loop runs on a 2-core CPU in minutes; the paper trains DeepSeek-V3-Base on math/code.

Launch:
    rlkit run r1_zero --config recipes/configs/r1_zero_tiny.yaml output_dir=runs/r1_zero_tiny
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray

import rewards
from rlkit import checkpoint, placement
from rlkit.actors import LearnerDied, LearnerGroup, RolloutGroup, init_ray
from rlkit.algo import AGGREGATIONS, KL_ESTIMATORS, RATIO_LEVELS
from rlkit.algo.advantages import ADVANTAGE_ESTIMATORS, check_group_size
from rlkit.collect import Collector
from rlkit.config import (AlgoConfig, DataConfig, LearnerConfig, ModelConfig, PartialConfig, PlacementConfig,
                          RewardConfig, RolloutConfig, SamplingConfig, ShapingConfig, TrainConfig, check_choice, save)
from rlkit.data import build_problems, load_rows
from rlkit.evaluation import evaluate
from rlkit.inputs import resolve_model
from rlkit.logging import MetricsLogger, StepProgress, print_summary, write_report
from rlkit.models import context_length, load_tokenizer, resolve_dtype
from rlkit.moe import check_options as check_moe_options
from rlkit.prompt_samplers import PROMPT_SAMPLERS, make_prompt_sampler
from rlkit.reports import write_summary
from rlkit.rollout import hf, vllm  # noqa: F401  (register the built-in engines; vLLM itself loads only when used)
from rlkit.rollout.engine import ENGINES, engine_setup
from rlkit.rollout.partial import STALE_TOKEN_MODES, PartialRolloutBuffer, adjust_stale_tokens, stale_token_metrics
from rlkit.run import summarize
from rlkit.scoring import Scorer, assign_advantages
from rlkit.shaping import filter_overlong, shape_rewards
from rlkit.types import SamplingParams, pack_rollouts
from rlkit.weight_sync import sync_weights


# ----------------------------------------------------------------------------- config
@dataclass
class Config(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    partial: PartialConfig = field(default_factory=PartialConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def validate(self) -> None:
        """Names looked up at run time and settings that cannot train, checked as the config is read."""
        for key, value, names, kind in (
            ("algo.advantage", self.algo.advantage, ADVANTAGE_ESTIMATORS.names(), "advantage estimator"),
            ("algo.aggregation", self.algo.aggregation, AGGREGATIONS.names(), "loss aggregation"),
            ("algo.level", self.algo.level, RATIO_LEVELS.names(), "importance-ratio level"),
            ("algo.kl_kind", self.algo.kl_kind, KL_ESTIMATORS.names(), "KL estimator"),
            ("rollout.engine", self.rollout.engine, ENGINES.names(), "rollout engine"),
            ("partial.stale_mode", self.partial.stale_mode, STALE_TOKEN_MODES.names(), "stale-token mode"),
            ("sampling.prompt_order", self.sampling.prompt_order, PROMPT_SAMPLERS.names(), "prompt order"),
            ("rollout.device", self.rollout.device, ("cpu", "cuda"), "device"),
            ("learner.device", self.learner.device, ("cpu", "cuda"), "device"),
            ("learner.mixed_precision", self.learner.mixed_precision, ("no", "bf16", "fp16"), "mixed precision"),
        ):
            check_choice(key, value, names, kind)
        for key, dtype in (("model.dtype", self.model.dtype), ("rollout.dtype", self.rollout.dtype)):
            try:
                if dtype:
                    resolve_dtype(dtype)
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
        check_group_size(self.rollout.group_size, self.algo.advantage)
        if self.rollout.prompts_per_step < 1:
            raise ValueError(f"rollout.prompts_per_step must be >= 1, got {self.rollout.prompts_per_step}")


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    # Everything that can be wrong with the inputs is checked here, before any actor starts.
    started = time.monotonic()
    cfg.model.path = resolve_model(cfg.model.path)  # a local folder wherever it was found
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    window = context_length(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    max_prompt = window - cfg.rollout.max_new_tokens if window else None
    columns = [cfg.data.prompt_column, cfg.data.answer_column]
    templating = dict(prompt_column=cfg.data.prompt_column, template=cfg.data.template, max_prompt_tokens=max_prompt,
                      answer_column=cfg.data.answer_column, system_prompt=cfg.data.system_prompt, think=cfg.data.think)
    train_rows = load_rows(cfg.data.train, required=columns, key="data.train")
    train = build_problems(train_rows, tokenizer, source=cfg.data.train, **templating)
    test = []
    if cfg.data.test:
        test_rows = load_rows(cfg.data.test, required=columns, default_split="test", key="data.test")
        if cfg.data.max_test_examples:
            test_rows = test_rows[: cfg.data.max_test_examples]
        test = build_problems(test_rows, tokenizer, source=cfg.data.test, **templating)
    scorer = Scorer.from_config(cfg.reward)  # reward models are checked here, before Ray starts
    if test:
        rewards.get(cfg.reward.accuracy)  # the held-out accuracy's reward: an unknown name stops here
    G, B = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    sampler = make_prompt_sampler(cfg.sampling.prompt_order, train, seed=cfg.seed,
                                  difficulty_column=cfg.sampling.difficulty_column)
    partial = None
    if cfg.partial.enabled:
        partial = PartialRolloutBuffer(cfg.partial.token_budget, max_staleness=cfg.partial.max_staleness,
                                       max_new_tokens=cfg.rollout.max_new_tokens)
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                              top_p=cfg.rollout.top_p)
    eval_sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens,
                                   temperature=cfg.rollout.eval_temperature, seed=cfg.seed)

    # checked here, before any actor starts (on this machine's resources unless joining a cluster)
    engine = engine_setup(cfg.rollout, cfg.model, seed=cfg.seed, record_routes=cfg.algo.routing_replay)
    check_moe_options(cfg.model.path, cfg.algo, trust_remote_code=cfg.model.trust_remote_code)
    tensor_parallel = engine.kwargs.get("tensor_parallel_size", 1)
    if not cfg.ray_address:
        placement.for_config(cfg.rollout, cfg.learner, cfg.placement, tensor_parallel=tensor_parallel,
                             cluster=placement.this_machine())

    init_ray(cfg.ray_address)
    plan = placement.place(placement.for_config(cfg.rollout, cfg.learner, cfg.placement,
                                                tensor_parallel=tensor_parallel), timeout_s=cfg.placement.timeout_s)
    rollouts = RolloutGroup(cfg.rollout.num_actors, engine.name, engine.kwargs, resources=plan.rollout,
                            timeout_s=cfg.placement.timeout_s)
    colocated = placement.colocated_gpus(cfg.rollout, cfg.learner, cfg.placement)
    learners = LearnerGroup(cfg.learner.num_learners,
                            {"model_path": cfg.model.path, "cfg": cfg.learner, "algo": cfg.algo,
                             "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p,
                             "max_new_tokens": cfg.rollout.max_new_tokens,
                             "dtype": cfg.model.dtype, "seed": cfg.seed,
                             "trust_remote_code": cfg.model.trust_remote_code},
                            resources=plan.learner, timeout_s=cfg.placement.timeout_s)

    collector = Collector(rollouts.generate, train, scorer, sampler, group_size=G, groups_per_step=B,
                          sampling=sampling, dynamic=cfg.sampling.dynamic, max_rounds=cfg.sampling.max_rounds,
                          partial=partial, groups_in_flight=cfg.partial.groups_in_flight)

    resumed_from, start_step, driver_state = checkpoint.resume_from(cfg.output_dir, cfg.resume, learners)
    if resumed_from is not None:
        collector.load_state_dict(driver_state["collector"])
        print(f"resumed from {resumed_from} at step {start_step}")
    logger = MetricsLogger(cfg.output_dir, tensorboard=cfg.tensorboard, resume=resumed_from is not None,
                           start_step=start_step)
    save(cfg, f"{cfg.output_dir}/config.yaml")
    sync_weights(learners, rollouts, version=start_step)

    def run_eval() -> dict[str, float]:
        return evaluate(rollouts.generate, test, accuracy=cfg.reward.accuracy, sampling=eval_sampling,
                        k=cfg.rollout.eval_samples)

    def save_checkpoint(step: int) -> None:
        checkpoint.save(checkpoint.step_dir(cfg.output_dir, step), learners=learners, tokenizer=tokenizer,
                        driver_state={"collector": collector.state_dict(), "step": step})

    # -------------------------------------------------------------------------- loop
    if start_step == 0 and test:
        logger.log(0, run_eval())
    bar = StepProgress("r1_zero", cfg.steps, initial=start_step, heldout=_last_heldout(logger.path))
    try:
        for step in range(start_step, cfg.steps):
            t0 = time.perf_counter()
            # the engines hold weights of version `step` (one sync per step), the learner too
            groups, metrics = collector.collect(version=step)
            if colocated:  # the engines give their GPU memory to the learner until the next sync
                rollouts.sleep()
            batch_rollouts = [r for g in groups for r in g]
            metrics.update(shape_rewards(batch_rollouts, cfg.shaping, step=step, group_size=G,
                                         max_new_tokens=cfg.rollout.max_new_tokens))
            metrics.update(assign_advantages(batch_rollouts, G, cfg.algo.advantage))

            t1 = time.perf_counter()
            batch = pack_rollouts(batch_rollouts, tokenizer.pad_token_id)
            if cfg.shaping.overlong_filter:
                batch, filtered = filter_overlong(batch, batch_rollouts)
                metrics.update(filtered)
            if partial is not None:
                proximal = learners.logprobs(batch) if cfg.partial.stale_mode == "importance" else None
                adjusted = adjust_stale_tokens(batch, step, cfg.partial.stale_mode, proximal_logp=proximal,
                                               cap=cfg.partial.is_cap)
                metrics.update(stale_token_metrics(batch, adjusted, step))
                batch = adjusted
            metrics.update(learners.train_step(batch))
            t_learn = time.perf_counter() - t1
            if colocated:
                rollouts.wake_up()
            t_sync = sync_weights(learners, rollouts, version=step + 1)

            lengths = [r.length for r in batch_rollouts]
            metrics.update({
                "response_length/mean": sum(lengths) / len(lengths),
                "response_length/max": float(max(lengths)),
                "response_length/truncated": sum(r.truncated for r in batch_rollouts) / len(batch_rollouts),
                "train/accuracy": sum(r.meta.get("correct", False) for r in batch_rollouts) / len(batch_rollouts),
                "time/learn_s": t_learn, "time/sync_s": t_sync,
                "time/step_s": time.perf_counter() - t0,
            })
            metrics["throughput/tokens_per_s"] = sum(lengths) / metrics["time/step_s"]  # sampled, per wall second
            done = step + 1
            if test and (done % cfg.eval_every == 0 or done == cfg.steps):
                metrics.update(run_eval())
            if done % cfg.log_every == 0 or "eval/accuracy" in metrics:
                logger.log(done, metrics)
            bar.update(metrics)
            if done % cfg.save_every == 0 or done == cfg.steps:
                save_checkpoint(done)
    except LearnerDied as err:  # rollout actors are replaced; a lost learner rank ends the run
        ray.shutdown()
        raise LearnerDied(f"{err} during step {step + 1}") from None  # `rlkit run` adds how to continue
    finally:
        bar.close()  # before any message: it ends the bar's line

    # ----------------------------------------------------------------------- cleanup
    logger.close()
    report = write_report(logger.path, f"{cfg.output_dir}/report.png", title="R1-Zero (GRPO)") if cfg.report else None
    ray.shutdown()
    summary = summarize(cfg.output_dir, recipe="r1_zero", steps=cfg.steps, wall_time_s=time.monotonic() - started,
                        checkpoint=checkpoint.latest(cfg.output_dir), report=report, start_step=start_step)
    print_summary(summary, summary_path=write_summary(cfg.output_dir, summary))
    return summary


def _last_heldout(metrics_path) -> float | None:
    """The held-out accuracy measured last (a resumed run shows it from the first step)."""
    from rlkit.logging import read_metrics

    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    values = [r["eval/accuracy"] for r in rows if isinstance(r.get("eval/accuracy"), (int, float))]
    return values[-1] if values else None


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
