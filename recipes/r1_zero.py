"""R1-Zero: reinforcement learning straight from a base model, with rule-based rewards only.

What it does (DeepSeek-R1, arXiv 2501.12948, section 2.2): every step samples a group of G
completions for each of B prompts in the R1-Zero template, scores only the outcome (answer
accuracy + think/answer format, equal weights), turns the scores into group-relative
advantages (GRPO, arXiv 2402.03300), takes one clipped-surrogate optimizer step and pushes
the new weights to the rollout engines. Rollouts run in Ray actors (transformers engine by
default), the learner in Ray actors around an accelerate Learner. Held-out accuracy is
measured at step 0, every `eval_every` steps and at the end.

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
from tqdm import tqdm

from rlkit import checkpoint, placement
from rlkit.actors import LearnerDied, LearnerGroup, RolloutGroup, init_ray
from rlkit.collect import Collector
from rlkit.config import (AlgoConfig, DataConfig, LearnerConfig, ModelConfig, PartialConfig, PlacementConfig,
                          RewardConfig, RolloutConfig, SamplingConfig, ShapingConfig, TrainConfig, save)
from rlkit.data import build_problems, load_rows
from rlkit.evaluation import evaluate
from rlkit.logging import MetricsLogger, write_report
from rlkit.models import context_length, load_tokenizer
from rlkit.moe import check_options as check_moe_options
from rlkit.prompt_samplers import make_prompt_sampler
from rlkit.rollout.engine import engine_setup
from rlkit.rollout.partial import PartialRolloutBuffer, adjust_stale_tokens, stale_token_metrics
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


def main(cfg: Config) -> None:
    # ------------------------------------------------------------------------- setup
    # Everything that can be wrong with the inputs is checked here, before any actor starts.
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    window = context_length(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    max_prompt = window - cfg.rollout.max_new_tokens if window else None
    columns = [cfg.data.prompt_column, cfg.data.answer_column]
    train_rows = load_rows(cfg.data.train, required=columns)
    train = build_problems(train_rows, tokenizer, prompt_column=cfg.data.prompt_column, template=cfg.data.template,
                           max_prompt_tokens=max_prompt, source=cfg.data.train, answer_column=cfg.data.answer_column)
    test = []
    if cfg.data.test:
        test_rows = load_rows(cfg.data.test, required=columns)
        if cfg.data.max_test_examples:
            test_rows = test_rows[: cfg.data.max_test_examples]
        test = build_problems(test_rows, tokenizer, prompt_column=cfg.data.prompt_column,
                              template=cfg.data.template, max_prompt_tokens=max_prompt, source=cfg.data.test,
                              answer_column=cfg.data.answer_column)
    scorer = Scorer.from_config(cfg.reward)  # reward models are checked here, before Ray starts
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

    start_step = 0
    resumed_from = checkpoint.latest(cfg.output_dir) if cfg.resume else None
    if resumed_from is not None:
        start_step = learners.load(str(resumed_from))
        collector.load_state_dict(checkpoint.load_driver_state(resumed_from)["collector"])
        print(f"resumed from {resumed_from} at step {start_step}")
    logger = MetricsLogger(cfg.output_dir, tensorboard=cfg.tensorboard, resume=resumed_from is not None)
    if resumed_from is not None:
        logger.truncate_after(start_step)
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
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="r1_zero", dynamic_ncols=True)
    try:
        for step in bar:
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
            done = step + 1
            if test and (done % cfg.eval_every == 0 or done == cfg.steps):
                metrics.update(run_eval())
            if done % cfg.log_every == 0 or "eval/accuracy" in metrics:
                logger.log(done, metrics)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", acc=f"{metrics['train/accuracy']:.2f}",
                            len=f"{metrics['response_length/mean']:.0f}")
            if done % cfg.save_every == 0 or done == cfg.steps:
                save_checkpoint(done)
    except LearnerDied as err:  # rollout actors are replaced; a lost learner rank ends the run
        bar.close()
        ray.shutdown()
        raise SystemExit(f"{err} during step {step + 1}; {checkpoint.resume_hint(cfg.output_dir)}") from None

    # ----------------------------------------------------------------------- cleanup
    bar.close()
    logger.close()
    if cfg.report:
        print(f"report: {write_report(logger.path, f'{cfg.output_dir}/report.png', title='R1-Zero (GRPO)')}")
    final = checkpoint.latest(cfg.output_dir)
    print(f"checkpoint: {final}")
    ray.shutdown()


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
