"""Distillation: a reasoning teacher's verified traces, fine-tuned into a smaller dense student.

What it does (DeepSeek-R1, arXiv 2501.12948, 2.4 and 4.1): the teacher is an RL-trained
checkpoint (`teacher`), or, when none is given, the R1-Zero recipe trains one first from
`rl.model.path`. Rejection sampling (`traces`) then samples the teacher on the training prompts
and keeps the correct, well-formed, finished, distinct traces; plain SFT (`sft`) fine-tunes the
student on them, with no RL. As the baseline of R1's table "distillation vs RL on a small model",
the same R1-Zero recipe with the same settings (`rl`: steps, batch, samples) runs straight on the
student (`compare_rl`). Every model is measured on the same held-out set the same way (`eval`).

Stages, each in its own directory under output_dir and resumable (a finished stage is not run
again): teacher_rl -> traces -> student_sft -> student_rl -> evaluation. summary.json holds
`teacher`, `student_before`, `student_after` and `student_rl`, each with `accuracy` and
`mean_length`, plus each stage's wall time; report.png shows them with both RL curves.

How it departs from the paper: R1 distils 800k samples (600k reasoning + 200k general) from
DeepSeek-R1 into Qwen2.5/Llama students for 2 epochs; here the teacher is the tiny MoE after the
tiny R1-Zero run and the student the 0.6M-parameter dense base shipped in data/models/tiny-dense
(same tokenizer and pretraining corpus). The teacher and student tokenizers must be identical:
checked before anything runs.

Launch:
    rlkit run distill --config recipes/configs/distill_tiny.yaml output_dir=runs/distill_tiny
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores

from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402

from rlkit import checkpoint  # noqa: E402
from rlkit.actors import init_ray  # noqa: E402
from rlkit.cli import load_recipe  # noqa: E402
from rlkit.config import save  # noqa: E402
from rlkit.heldout import EvalConfig, evaluate_model, load_heldout  # noqa: E402
from rlkit.inputs import resolve_model  # noqa: E402
from rlkit.models import load_tokenizer  # noqa: E402
from rlkit.reports import write_model_bars, write_summary  # noqa: E402
from rlkit.sft.data import SFTDataError, check_same_tokenizer  # noqa: E402
from rlkit.stages import StageRunner, configured, read_curve  # noqa: E402

r1_zero_recipe = load_recipe("r1_zero")
rejection_recipe = load_recipe("rejection_sampling")
sft_recipe = load_recipe("sft")


# ----------------------------------------------------------------------------- config
@dataclass
class Config:
    output_dir: str = "runs/distill"
    seed: int = 0
    resume: bool = True  # finished stages are not run again
    teacher: str = ""  # an RL-trained HF checkpoint; "" = train one with `rl` from rl.model.path first
    student: str = "data/models/tiny-dense"
    compare_rl: bool = True  # also RL straight on the student with the same `rl` settings
    # Stage configs: their output_dir, model path and data files are set by this recipe.
    rl: r1_zero_recipe.Config = field(default_factory=r1_zero_recipe.Config)
    traces: rejection_recipe.Config = field(default_factory=rejection_recipe.Config)
    sft: sft_recipe.Config = field(default_factory=sft_recipe.Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray_address: str = ""


def main(cfg: Config) -> dict:
    # ------------------------------------------------------------------------- setup
    # Checked before any stage: tokenizers must match, the held-out set must load.
    if not cfg.teacher or cfg.compare_rl:  # the RL stages start from it
        cfg.rl.model.path = resolve_model(cfg.rl.model.path, key="rl.model.path")
    cfg.student = resolve_model(cfg.student, key="student")
    if cfg.teacher:
        cfg.teacher = resolve_model(cfg.teacher, key="teacher")
    try:
        check_same_tokenizer(cfg.teacher or cfg.rl.model.path, cfg.student)
    except SFTDataError as e:
        raise SystemExit(f"distill: {e}") from None
    heldout = load_heldout(cfg.eval, load_tokenizer(cfg.student))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    save(cfg, f"{cfg.output_dir}/config.yaml")
    stages = StageRunner(cfg.output_dir, resume=cfg.resume)

    def rl_stage(model_path: str):
        def run(stage_dir: Path) -> dict:
            r1_zero_recipe.main(configured(cfg.rl, output_dir=str(stage_dir), resume=True,
                                           **{"model.path": model_path}))
            return {"checkpoint": str(checkpoint.latest(stage_dir)), "curve": read_curve(stage_dir / "metrics.jsonl")}
        return run

    # -------------------------------------------------------------------------- stages
    teacher = cfg.teacher
    if not teacher:
        teacher = stages.run("teacher_rl", rl_stage(cfg.rl.model.path), cfg.rl)["checkpoint"]

    def sample_traces(stage_dir: Path) -> dict:
        out = rejection_recipe.main(configured(cfg.traces, output_dir=str(stage_dir), **{"model.path": teacher}))
        return {**out, "dataset": str(stage_dir / "dataset.jsonl")}

    traces = stages.run("traces", sample_traces, {"traces": cfg.traces, "teacher": teacher})

    def train_student(stage_dir: Path) -> dict:
        return sft_recipe.main(configured(cfg.sft, output_dir=str(stage_dir), eval_before=False,
                                          **{"model.path": cfg.student, "data.train": traces["dataset"],
                                             "eval.test": ""}))

    student_sft = stages.run("student_sft", train_student, {"sft": cfg.sft, "traces": traces["dataset"]})
    student_rl = stages.run("student_rl", rl_stage(cfg.student), {"rl": cfg.rl, "student": cfg.student}) \
        if cfg.compare_rl else None

    models = {"teacher": teacher, "student_before": cfg.student, "student_after": student_sft["checkpoint"]}
    if student_rl:
        models["student_rl"] = student_rl["checkpoint"]

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
        **{name: {"accuracy": f["accuracy"], "mean_length": f["mean_length"]} for name, f in figures.items()},
        "student_gain": figures["student_after"]["accuracy"] - figures["student_before"]["accuracy"],
        "traces": {k: traces[k] for k in ("prompts", "samples", "kept")},
        "models": models,
        "seconds": stages.seconds,
    }
    if student_rl:
        summary["student_rl_gain"] = figures["student_rl"]["accuracy"] - figures["student_before"]["accuracy"]
    write_summary(cfg.output_dir, summary)
    curves = [("teacher RL", read_curve(Path(cfg.output_dir) / "teacher_rl" / "metrics.jsonl"))]
    if student_rl:
        curves.append(("RL on the student", student_rl["curve"]))
    write_model_bars([{"name": n, **f} for n, f in figures.items()], f"{cfg.output_dir}/report.png",
                     title="distillation vs RL on the small student", curves=curves)
    _metrics(cfg.output_dir, figures)
    print(f"distill: student {figures['student_before']['accuracy']:.3f} -> {figures['student_after']['accuracy']:.3f} "
          f"(teacher {figures['teacher']['accuracy']:.3f}"
          + (f", RL on the student {figures['student_rl']['accuracy']:.3f}" if student_rl else "") + ")")
    return summary


def _metrics(output_dir: str, figures: dict) -> None:
    """metrics.jsonl: one row per evaluated model (the stages keep their own step-by-step metrics)."""
    import json

    with open(f"{output_dir}/metrics.jsonl", "w") as f:
        for i, (name, fig) in enumerate(figures.items()):
            f.write(json.dumps({"step": i, "model": name, **{f"eval/{k}": v for k, v in fig.items()}}) + "\n")


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
