"""R1 pipeline: the four DeepSeek-R1 stages as one command, each stage's output the next one's input.

What it does (DeepSeek-R1, arXiv 2501.12948, 2.3):
1. cold start: SFT of the base on a few hundred readable long chains of thought (`cold_start`:
   a dataset, or, by default, careful-procedure samples rendered by the task generator for
   training prompts);
2. reasoning RL: the R1-Zero recipe from the cold-start model, rewards accuracy + format +
   language consistency (`reasoning_rl`);
3. rejection sampling + SFT: the stage-2 model sampled on training prompts, only correct,
   well-formed, finished, distinct samples kept (`rejection`), optionally mixed with non-reasoning
   data (`extra_sft_data`), then SFT of the base model on them, as R1 does (`rejection_sft`;
   `rejection_sft_from: previous` fine-tunes the stage-2 model instead);
4. RL for all scenarios: the R1-Zero recipe again from the stage-3 model (`all_rl`).
With `compare_zero`, the R1-Zero recipe also runs from the base (`zero`, by default the settings
of recipes/configs/r1_zero_tiny.yaml), to measure R1's cold-start claim: how many RL steps each
needs to reach the R1-Zero run's final held-out accuracy.

Every stage writes into its own directory under output_dir and is resumable: running the same
command again skips each finished stage (a killed run continues with the stage it was in; an RL
stage also continues from its last checkpoint). summary.json: `stages`, one {name, accuracy,
mean_length} per stage on the held-out set (`eval`), `base`, and `cold_start_claim`; report.png
shows every stage and the RL curves.

How it departs from the paper: stage 4 of R1 mixes general prompts and preference reward models
for helpfulness and harmlessness; the tiny default has one task and rule-based rewards only, so
stage 4 is a second reasoning RL run. R1's cold-start data are thousands of human-polished
CoTs, its stage-3 set 600k reasoning + 200k general samples; here a few hundred generated
samples and a few thousand rejection-sampled ones.

Launch:
    rlkit run r1_pipeline --config recipes/configs/r1_pipeline_tiny.yaml output_dir=runs/r1_pipeline_tiny
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores

import json  # noqa: E402
import random  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import ray  # noqa: E402

from rlkit import checkpoint  # noqa: E402
from rlkit.actors import init_ray  # noqa: E402
from rlkit.cli import load_recipe  # noqa: E402
from rlkit.config import save  # noqa: E402
from rlkit.data import load_rows  # noqa: E402
from rlkit.heldout import EvalConfig, evaluate_model, load_heldout  # noqa: E402
from rlkit.inputs import resolve_model  # noqa: E402
from rlkit.models import load_tokenizer  # noqa: E402
from rlkit.reports import write_model_bars, write_summary  # noqa: E402
from rlkit.stages import StageRunner, configured, read_curve  # noqa: E402
from rlkit.sft.config import ColdStartConfig  # noqa: E402
from rlkit.sft.data import cold_start_rows  # noqa: E402

r1_zero_recipe = load_recipe("r1_zero")
rejection_recipe = load_recipe("rejection_sampling")
sft_recipe = load_recipe("sft")


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/r1_pipeline"
    seed: int = 0
    resume: bool = True  # finished stages are not run again
    base: str = "data/models/tiny-moe"
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    # Stage configs: their output_dir, model path and data files are set by this recipe.
    cold_start_sft: sft_recipe.Config = field(default_factory=sft_recipe.Config)
    reasoning_rl: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    rejection: rejection_recipe.Config = field(default_factory=rejection_recipe.Config)
    extra_sft_data: str = ""  # non-reasoning prompt/completion rows mixed into the stage-3 SFT set
    rejection_sft_from: str = "base"  # base (as R1) | previous (the stage-2 model)
    rejection_sft: sft_recipe.Config = field(default_factory=sft_recipe.Config)
    all_rl: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    compare_zero: bool = True  # also the R1-Zero recipe from the base (`zero`), for the cold-start claim
    zero: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray_address: str = ""

    def validate(self) -> None:
        if self.rejection_sft_from not in ("base", "previous"):
            raise ValueError(f"rejection_sft_from must be base or previous, got {self.rejection_sft_from!r}")


STAGES = ("cold_start_sft", "reasoning_rl", "rejection_sft", "all_scenarios_rl")


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    cfg.base = resolve_model(cfg.base, key="base")
    heldout = load_heldout(cfg.eval, load_tokenizer(cfg.base))
    if cfg.extra_sft_data:
        load_rows(cfg.extra_sft_data, required=[])  # a missing file is an error now, not in stage 3
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    save(cfg, f"{cfg.output_dir}/config.yaml")
    stages = StageRunner(cfg.output_dir, resume=cfg.resume)

    def rl(rl_cfg, model_path: str) -> Callable[[Path], dict]:
        def run(stage_dir: Path) -> dict:
            r1_zero_recipe.main(configured(rl_cfg, output_dir=str(stage_dir), resume=True,
                                           **{"model.path": model_path}))
            return {"checkpoint": str(checkpoint.latest(stage_dir)), "curve": read_curve(stage_dir / "metrics.jsonl")}
        return run

    def sft(sft_cfg, model_path: str, data: str) -> dict:
        return sft_recipe.main(configured(sft_cfg, eval_before=False,
                                          **{"model.path": model_path, "data.train": data, "eval.test": ""}))

    # -------------------------------------------------------------------------- stages
    def cold_start(stage_dir: Path) -> dict:
        data = cold_start_rows(cfg.cold_start, stage_dir / "cold_start.jsonl", cfg.seed)
        return sft(configured(cfg.cold_start_sft, output_dir=str(stage_dir / "sft")), cfg.base, data)

    stage1 = stages.run("1_cold_start_sft", cold_start, {"cold_start": cfg.cold_start, "sft": cfg.cold_start_sft,
                                                         "base": cfg.base})
    stage2 = stages.run("2_reasoning_rl", rl(cfg.reasoning_rl, stage1["checkpoint"]), cfg.reasoning_rl)

    def rejection(stage_dir: Path) -> dict:
        return rejection_recipe.main(configured(cfg.rejection, output_dir=str(stage_dir),
                                                **{"model.path": stage2["checkpoint"]}))

    samples = stages.run("3_rejection_sampling", rejection, {"rejection": cfg.rejection, "from": stage2["checkpoint"]})

    def rejection_sft(stage_dir: Path) -> dict:
        data = str(Path(cfg.output_dir) / "3_rejection_sampling" / "dataset.jsonl")
        if cfg.extra_sft_data:
            data = mix(data, cfg.extra_sft_data, stage_dir / "sft_data.jsonl", cfg.seed)
        start_from = cfg.base if cfg.rejection_sft_from == "base" else stage2["checkpoint"]
        return sft(configured(cfg.rejection_sft, output_dir=str(stage_dir)), start_from, data)

    stage3 = stages.run("3_rejection_sft", rejection_sft, {"sft": cfg.rejection_sft, "extra": cfg.extra_sft_data,
                                                           "from": cfg.rejection_sft_from, "samples": samples["kept"]})
    stage4 = stages.run("4_all_scenarios_rl", rl(cfg.all_rl, stage3["checkpoint"]), cfg.all_rl)
    zero = stages.run("zero_baseline", rl(cfg.zero, cfg.base), {"rl": cfg.zero, "base": cfg.base}) \
        if cfg.compare_zero else None

    models = {"base": cfg.base, **dict(zip(STAGES, (s["checkpoint"] for s in (stage1, stage2, stage3, stage4))))}

    def evaluate_all(stage_dir: Path) -> dict:
        owns_ray = not ray.is_initialized()
        init_ray(cfg.ray_address)
        out = {name: evaluate_model(path, heldout, cfg.eval, seed=cfg.seed) for name, path in models.items()}
        if owns_ray:
            ray.shutdown()
        return out

    figures = stages.run("evaluation", evaluate_all, config={"models": models, "eval": cfg.eval, "seed": cfg.seed})

    # ----------------------------------------------------------------------- cleanup
    summary = {
        "stages": [{"name": name, "accuracy": figures[name]["accuracy"], "mean_length": figures[name]["mean_length"]}
                   for name in STAGES],
        "base": {"accuracy": figures["base"]["accuracy"], "mean_length": figures["base"]["mean_length"]},
        "final_accuracy": figures[STAGES[-1]]["accuracy"],
        "rejection_sampling": {k: samples[k] for k in ("prompts", "samples", "kept")},
        "models": models,
        "seconds": stages.seconds,
    }
    if zero is not None:
        summary["cold_start_claim"] = cold_start_claim(zero["curve"], stage2["curve"])
    write_summary(cfg.output_dir, summary)
    with open(f"{cfg.output_dir}/metrics.jsonl", "w") as f:  # one row per evaluated model, in stage order
        for i, (name, fig) in enumerate(figures.items()):
            f.write(json.dumps({"step": i, "model": name, **{f"eval/{k}": v for k, v in fig.items()}}) + "\n")
    curves = [("stage 2 (after cold start)", stage2["curve"]), ("stage 4", stage4["curve"])]
    if zero is not None:
        curves.append(("R1-Zero from the base", zero["curve"]))
    write_model_bars([{"name": n, **f} for n, f in figures.items()], f"{cfg.output_dir}/report.png",
                     title="R1 pipeline: the four stages", curves=curves)
    print("r1_pipeline: " + ", ".join(f"{s['name']} {s['accuracy']:.3f} ({s['mean_length']:.0f} tokens)"
                                      for s in summary["stages"]))
    if zero is not None:
        print(f"r1_pipeline: cold-start claim {summary['cold_start_claim']}")
    return summary


def mix(reasoning: str, extra: str, path: Path, seed: int) -> str:
    """The stage-3 set: rejection-sampled reasoning rows plus non-reasoning rows, shuffled together."""
    columns = ["prompt", "completion"]
    rows = [{c: r[c] for c in columns} for source in (reasoning, extra) for r in load_rows(source, required=columns)]
    random.Random(seed).shuffle(rows)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def cold_start_claim(zero_curve: list, cold_curve: list) -> dict:
    """RL steps each run needs to reach the R1-Zero run's final held-out accuracy (its own evaluations)."""
    zero_final = zero_curve[-1][1]
    reach = lambda curve: next((step for step, acc in curve if acc >= zero_final), None)  # noqa: E731
    return {"zero_final_accuracy": zero_final, "zero_steps": reach(zero_curve),
            "zero_total_steps": zero_curve[-1][0], "cold_start_rl_steps": reach(cold_curve),
            "cold_start_rl_curve": cold_curve, "zero_curve": zero_curve}


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
