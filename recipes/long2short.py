"""long2short: shorter answers from a long-CoT model at (nearly) the same accuracy.

What it does (Kimi k1.5, arXiv 2501.12599, 2.4): starts from a long-CoT checkpoint
(`long_model`; when none is given, one is made first as R1 makes its reasoning model: a cold-start
SFT of `rl.model.path` on long chains of thought (`long_cold_start`, `long_sft`; skipped with
`long_cold_start.samples=0`), then the R1-Zero recipe (`rl`)), samples it N times per training prompt and keeps each prompt's shortest correct answer (shortest
rejection sampling, `sampling`), also writing DPO pairs (chosen = shortest correct, rejected =
wrong or >= 1.5x longer). Then the configured `methods` run in order, each starting from the
previous one's model:
- `shortest_sft`: SFT on the shortest correct answers;
- `dpo`: DPO on the pairs, the reference being the model it starts from;
- `merge`: the weighted average of the long model and the current one,
  theta = merge_weight * theta_long + (1 - merge_weight) * theta_current;
- `length_rl`: the R1-Zero recipe again from the current model with Kimi's length reward
  (`length_rl.shaping.kimi_length_coef > 0`; k1.5's long2short RL).
Every model is measured on the same held-out set (`eval`). summary.json: `long` and `short` (the
last method's model), each with `accuracy` and `mean_length`, every method's figures, the
relative length reduction and the accuracy change; report.png shows them side by side.

Stages (resumable; a finished stage is not run again): long_sft -> long_rl -> shortest_sampling
-> 1_<method> -> 2_<method> ... -> evaluation.

How it departs from the paper: k1.5 applies each method to its long-CoT model on its own and
compares them; here they chain, each from the previous one's model (one method per run gives
the separate comparison). On the tiny task the room to shorten is the concise habit the base
learned beside the careful one: the same procedure without its plan and check (data/README.md).
RL on that base drifts from the careful towards the concise form (0.24 / 0.06 of the base's
samples, 0.52 / 0.45 after 100 R1-Zero steps), so a model trained by RL alone is only half long;
the cold start of the long model renders the careful form for 82% of its rows and the concise
one for 18%, which leaves it long (about 81% careful after RL) with short answers still among
its samples for shortest rejection sampling to find.

Launch:
    rlkit run long2short --config recipes/configs/long2short_tiny.yaml output_dir=runs/long2short_tiny
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores

import json  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import ray  # noqa: E402

from rlkit import checkpoint  # noqa: E402
from rlkit.actors import init_ray  # noqa: E402
from rlkit.cli import load_recipe  # noqa: E402
from rlkit.config import save  # noqa: E402
from rlkit.heldout import EvalConfig, evaluate_model, load_heldout  # noqa: E402
from rlkit.inputs import resolve_model  # noqa: E402
from rlkit.merge import merge_checkpoints  # noqa: E402
from rlkit.models import load_tokenizer  # noqa: E402
from rlkit.registry import Registry  # noqa: E402
from rlkit.reports import write_model_bars, write_summary  # noqa: E402
from rlkit.sft.config import ColdStartConfig  # noqa: E402
from rlkit.sft.data import cold_start_rows  # noqa: E402
from rlkit.stages import StageRunner, configured  # noqa: E402

r1_zero_recipe = load_recipe("r1_zero")
rejection_recipe = load_recipe("rejection_sampling")
sft_recipe = load_recipe("sft")
dpo_recipe = load_recipe("dpo")

# method name -> fn(cfg, shortest sampling summary, current model, stage dir) -> {"checkpoint": ...}
METHODS: Registry[Callable[..., dict]] = Registry("long2short method")


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/long2short"
    seed: int = 0
    resume: bool = True  # finished stages are not run again
    long_model: str = ""  # an RL-trained long-CoT HF checkpoint; "" = make one (long_cold_start, long_sft, rl)
    methods: list[str] = field(default_factory=lambda: ["shortest_sft"])  # in order; also dpo, merge, length_rl
    merge_weight: float = 0.5  # merge: weight of the long model
    long_cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)  # samples=0: no cold start
    # Stage configs: their output_dir, model path and data files are set by this recipe.
    long_sft: sft_recipe.Config = field(default_factory=sft_recipe.Config)
    rl: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    sampling: rejection_recipe.Config = field(default_factory=rejection_recipe.Config)
    sft: sft_recipe.Config = field(default_factory=sft_recipe.Config)
    dpo: dpo_recipe.Config = field(default_factory=dpo_recipe.Config)
    length_rl: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray_address: str = ""

    def validate(self) -> None:
        if not self.methods:
            raise ValueError("long2short: methods is empty; choose from " + ", ".join(METHODS.names()))
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"long2short: unknown method {name!r}; available: {', '.join(METHODS.names())}")
        if not 0.0 <= self.merge_weight <= 1.0:
            raise ValueError(f"merge_weight must be in [0, 1], got {self.merge_weight}")


@METHODS.register("shortest_sft")
def shortest_sft(cfg: Config, shortest: dict, current: str, stage_dir: Path) -> dict:
    return sft_recipe.main(configured(cfg.sft, output_dir=str(stage_dir), eval_before=False,
                                      **{"model.path": current, "data.train": shortest["dataset"], "eval.test": ""}))


@METHODS.register("dpo")
def dpo(cfg: Config, shortest: dict, current: str, stage_dir: Path) -> dict:
    if not shortest.get("pairs"):
        raise SystemExit("long2short: shortest sampling produced no DPO pairs (every prompt's samples were of "
                         "one length and all correct); drop `dpo` from methods or sample more per prompt")
    return dpo_recipe.main(configured(cfg.dpo, output_dir=str(stage_dir), eval_before=False,
                                      **{"model.path": current, "dpo.pairs": shortest["pairs_file"], "eval.test": ""}))


@METHODS.register("merge")
def merge(cfg: Config, shortest: dict, current: str, stage_dir: Path) -> dict:
    out = merge_checkpoints([shortest["model"], current], [cfg.merge_weight, 1.0 - cfg.merge_weight],
                            stage_dir / "model")
    return {"checkpoint": str(out), "weights": {"long": cfg.merge_weight, "current": 1.0 - cfg.merge_weight}}


@METHODS.register("length_rl")
def length_rl(cfg: Config, shortest: dict, current: str, stage_dir: Path) -> dict:
    r1_zero_recipe.main(configured(cfg.length_rl, output_dir=str(stage_dir), resume=True, **{"model.path": current}))
    return {"checkpoint": str(checkpoint.latest(stage_dir))}


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    cfg.rl.model.path = resolve_model(cfg.rl.model.path, key="rl.model.path")
    if cfg.long_model:
        cfg.long_model = resolve_model(cfg.long_model, key="long_model")
    heldout = load_heldout(cfg.eval, load_tokenizer(cfg.long_model or cfg.rl.model.path))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    save(cfg, f"{cfg.output_dir}/config.yaml")
    stages = StageRunner(cfg.output_dir, resume=cfg.resume)

    # -------------------------------------------------------------------------- stages
    long_model = cfg.long_model
    if not long_model:
        start = cfg.rl.model.path
        if cfg.long_cold_start.samples > 0 or cfg.long_cold_start.data:
            def cold_start(stage_dir: Path) -> dict:
                data = cold_start_rows(cfg.long_cold_start, stage_dir / "cold_start.jsonl", cfg.seed)
                return sft_recipe.main(configured(cfg.long_sft, output_dir=str(stage_dir / "sft"), eval_before=False,
                                                  **{"model.path": start, "data.train": data, "eval.test": ""}))
            start = stages.run("long_sft", cold_start, {"cold_start": cfg.long_cold_start, "sft": cfg.long_sft,
                                                        "base": start})["checkpoint"]

        def train_long(stage_dir: Path) -> dict:
            r1_zero_recipe.main(configured(cfg.rl, output_dir=str(stage_dir), resume=True, **{"model.path": start}))
            return {"checkpoint": str(checkpoint.latest(stage_dir))}
        long_model = stages.run("long_rl", train_long, {"rl": cfg.rl, "from": start})["checkpoint"]

    def sample_shortest(stage_dir: Path) -> dict:
        out = rejection_recipe.main(configured(cfg.sampling, output_dir=str(stage_dir),
                                               **{"model.path": long_model, "rejection.pairs": True}))
        return {**out, "model": long_model, "dataset": str(stage_dir / "dataset.jsonl"),
                "pairs_file": str(stage_dir / "pairs.jsonl")}

    shortest = stages.run("shortest_sampling", sample_shortest, {"sampling": cfg.sampling, "long": long_model})
    current, produced = long_model, []
    for i, name in enumerate(cfg.methods, start=1):
        stage_config = {"method": name, "from": current, "sft": cfg.sft if name == "shortest_sft" else None,
                        "dpo": cfg.dpo if name == "dpo" else None,
                        "merge_weight": cfg.merge_weight if name == "merge" else None,
                        "length_rl": cfg.length_rl if name == "length_rl" else None}
        method = METHODS.get(name)
        out = stages.run(f"{i}_{name}", lambda d, method=method, current=current: method(cfg, shortest, current, d),
                         stage_config)
        current = out["checkpoint"]
        produced.append((name, current))

    def evaluate_all(stage_dir: Path) -> dict:
        owns_ray = not ray.is_initialized()
        init_ray(cfg.ray_address)
        out = {"long": evaluate_model(long_model, heldout, cfg.eval, seed=cfg.seed)}
        for name, path in produced:
            out[name] = evaluate_model(path, heldout, cfg.eval, seed=cfg.seed)
        if owns_ray:
            ray.shutdown()
        return out

    figures = stages.run("evaluation", evaluate_all,
                         config={"long": long_model, "produced": produced, "eval": cfg.eval, "seed": cfg.seed})

    # ----------------------------------------------------------------------- cleanup
    long, short = figures["long"], figures[cfg.methods[-1]]
    summary = {
        "long": {"accuracy": long["accuracy"], "mean_length": long["mean_length"]},
        "short": {"accuracy": short["accuracy"], "mean_length": short["mean_length"]},
        "length_reduction": 1.0 - short["mean_length"] / long["mean_length"],
        "accuracy_change": short["accuracy"] - long["accuracy"],
        "methods": [{"name": name, "accuracy": figures[name]["accuracy"], "mean_length": figures[name]["mean_length"],
                     "checkpoint": path} for name, path in produced],
        "shortest_sampling": {k: shortest[k] for k in ("prompts", "samples", "kept", "pairs", "mean_tokens_kept")},
        "long_model": long_model,
        "seconds": stages.seconds,
    }
    write_summary(cfg.output_dir, summary)
    with open(f"{cfg.output_dir}/metrics.jsonl", "w") as f:  # one row per evaluated model, in order
        for i, (name, fig) in enumerate(figures.items()):
            f.write(json.dumps({"step": i, "model": name, **{f"eval/{k}": v for k, v in fig.items()}}) + "\n")
    write_model_bars([{"name": n, **f} for n, f in figures.items()], f"{cfg.output_dir}/report.png",
                     title="long2short: " + " -> ".join(cfg.methods))
    print(f"long2short: mean length {long['mean_length']:.1f} -> {short['mean_length']:.1f} "
          f"({100 * summary['length_reduction']:.0f}% shorter), accuracy {long['accuracy']:.3f} -> "
          f"{short['accuracy']:.3f}")
    return summary


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
