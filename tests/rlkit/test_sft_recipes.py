"""The SFT-side recipes end to end on a random tiny model: outputs, per-stage resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlkit.cli import load_recipe, run_recipe
from rlkit.config import load
from rlkit.stages import MARKER

ROOT = Path(__file__).resolve().parents[2]
TINY_MOE = str(ROOT / "data" / "models" / "tiny-moe")
RL = ["rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8", "data.max_test_examples=4",
      "learner.micro_batch_size=8", "tensorboard=false", "reward.weights={tag_count: 1.0, think_format: 1.0}",
      "reward.accuracy=think_format", "steps=2", "eval_every=2", "save_every=2"]
EVAL = ["eval.max_test_examples=4", "eval.max_new_tokens=8", "eval.accuracy=think_format"]


@pytest.fixture(scope="module")
def sft_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "rows.jsonl"
    rows = [{"prompt": f"What is {a} plus {b} ?", "completion": f"the answer is {a + b}", "answer": str(a + b)}
            for a in range(3) for b in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pipeline_overrides(model, prompts, rows, out):
    o = [f"output_dir={out}", f"base={model}", f"cold_start.data={rows}", "compare_zero=false",
         f"eval.test={prompts}", *EVAL, "rejection.rejection.filters=[length]", "rejection.rejection.max_prompts=4",
         "rejection.rejection.samples_per_prompt=2", "rejection.rollout.max_new_tokens=8", f"rejection.data.train={prompts}"]
    for stage in ("reasoning_rl", "all_rl"):
        o += [f"{stage}.{x}" for x in RL]
        o += [f"{stage}.data.train={prompts}", f"{stage}.data.test={prompts}"]
    for stage in ("cold_start_sft", "rejection_sft"):
        o += [f"{stage}.optim.batch_size=4", f"{stage}.optim.epochs=1", f"{stage}.optim.threads=1"]
    return o


@pytest.mark.timeout(900)
def test_pipeline_runs_four_stages_and_resumes_per_stage(random_tiny_model, tiny_prompts, sft_rows, tmp_path):
    recipe = load_recipe("r1_pipeline")
    out = tmp_path / "pipe"
    overrides = _pipeline_overrides(random_tiny_model, tiny_prompts, sft_rows, out)
    # a first run that dies in stage 3's SFT (every sample over its max_length)
    with pytest.raises(SystemExit, match="longer than max_length=5"):
        recipe.main(load(recipe.Config, None, overrides + ["rejection_sft.data.max_length=5"]))
    finished = {d: (out / d / MARKER).stat().st_mtime_ns for d in ("1_cold_start_sft", "2_reasoning_rl",
                                                                   "3_rejection_sampling")}
    assert not (out / "3_rejection_sft" / MARKER).exists() and not (out / "4_all_scenarios_rl").exists()

    # the fixed command continues with stage 3's SFT: stages 1, 2 and the sampling are not run again
    summary = recipe.main(load(recipe.Config, None, overrides))
    assert {d: (out / d / MARKER).stat().st_mtime_ns for d in finished} == finished
    assert [s["name"] for s in summary["stages"]] == ["cold_start_sft", "reasoning_rl", "rejection_sft",
                                                      "all_scenarios_rl"]
    for s in summary["stages"]:
        assert 0.0 <= s["accuracy"] <= 1.0 and s["mean_length"] > 0
    assert json.loads((out / "summary.json").read_text())["stages"] == summary["stages"]
    assert (out / "report.png").stat().st_size > 1000 and (out / "metrics.jsonl").exists()
    # each stage's output is the next one's input
    assert Path(summary["models"]["all_scenarios_rl"]).parent.parent == out / "4_all_scenarios_rl"
    stage3 = json.loads((out / "3_rejection_sft" / MARKER).read_text())["summary"]
    assert stage3["model"] == random_tiny_model  # stage-3 SFT starts from the base, as R1 does
    assert stage3["data"] == str(out / "3_rejection_sampling" / "dataset.jsonl")
    stage4 = yaml.safe_load((out / "4_all_scenarios_rl" / "config.yaml").read_text())
    assert stage4["model"]["path"] == stage3["checkpoint"]

    # once more: everything finished, nothing runs, same figures
    markers = {d.name: (d / MARKER).stat().st_mtime_ns for d in out.iterdir() if (d / MARKER).exists()}
    again = recipe.main(load(recipe.Config, None, overrides))
    assert {name: (out / name / MARKER).stat().st_mtime_ns for name in markers} == markers
    assert again["stages"] == summary["stages"]


def _run(recipe: str, overrides: list[str]) -> str:
    """Run a recipe in this process as `rlkit run` would; return the message it stopped with."""
    module = load_recipe(recipe)
    with pytest.raises(SystemExit) as e:
        run_recipe(module.Config, module.main, None, overrides)
    return str(e.value.code)


def test_bad_input_stops_before_training_with_one_message(random_tiny_model, tiny_prompts, tmp_path):
    no_columns = tmp_path / "q.jsonl"
    no_columns.write_text('{"question": "What is 1 plus 1 ?", "response": "2"}\n' * 5)
    long_rows = tmp_path / "long.jsonl"
    long_rows.write_text("".join(json.dumps({"prompt": "What is 1 plus 1 ?", "completion": " ".join(["2"] * n)}) + "\n"
                                 for n in (3, 200, 300)))
    msg = _run("sft", [f"model.path={random_tiny_model}", f"data.train={no_columns}", f"output_dir={tmp_path / 's'}"])
    assert "has neither 'prompt'/'completion' columns nor 'messages'" in msg and "(5 rows)" in msg
    msg = _run("sft", [f"model.path={random_tiny_model}", f"data.train={long_rows}", f"output_dir={tmp_path / 's'}"])
    assert "2 of 3 samples are longer than max_length=128" in msg and "overlong" in msg
    assert not (tmp_path / "s" / "checkpoints").exists()
    msg = _run("distill", [f"student={random_tiny_model}", f"rl.model.path={TINY_MOE}", f"output_dir={tmp_path / 'd'}"])
    assert "different tokenizers" in msg and "tokens differ" in msg
    assert not (tmp_path / "d" / "teacher_rl").exists()  # checked before any stage
    msg = _run("rejection_sampling", [f"model.path={random_tiny_model}", f"data.train={tiny_prompts}",
                                      "rejection.max_prompts=2", "rejection.samples_per_prompt=2",
                                      "rollout.max_new_tokens=4", f"output_dir={tmp_path / 'rs'}"])
    assert "kept 0 of 4 samples (2 prompts); dropped by: correct 4" in msg and "Nothing to fine-tune on" in msg
    assert json.loads((tmp_path / "rs" / "summary.json").read_text())["kept"] == 0


@pytest.mark.parametrize("recipe", ["sft", "dpo"])
def test_a_run_stopped_mid_way_continues_to_the_uninterrupted_result(recipe, random_tiny_model, sft_rows, tmp_path):
    # 9 rows (pairs) in batches of 2 = 4 SFT (5 DPO) steps an epoch, so 7 steps cross an epoch. The stopped
    # run saved at steps 2 and 4 and was stopped in step 5; resume=true must end with the uninterrupted
    # run's weights.
    import torch
    from safetensors.torch import load_file

    from rlkit.sft.trainer import SupervisedLearner

    module = load_recipe(recipe)
    common = [f"model.path={random_tiny_model}", "eval.test=", "optim.batch_size=2", "optim.micro_batch_size=2",
              "optim.max_steps=7", "optim.lr=1e-2", "optim.threads=1", "save_every=2", "report=false"]
    if recipe == "sft":
        common.append(f"data.train={sft_rows}")
    else:
        pairs = tmp_path / "pairs.jsonl"
        rows = [json.loads(line) for line in Path(sft_rows).read_text().splitlines()]
        pairs.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["completion"],
                                             "rejected": r["completion"] + " 7"}) + "\n" for r in rows))
        common.append(f"dpo.pairs={pairs}")
    whole = module.main(load(module.Config, None, [*common, f"output_dir={tmp_path / 'whole'}"]))

    step_method = "sft_step" if recipe == "sft" else "dpo_step"
    real_step = getattr(SupervisedLearner, step_method)

    def stop_in_step_five(self, *args, **kwargs):
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    setattr(SupervisedLearner, step_method, stop_in_step_five)
    try:
        with pytest.raises(KeyboardInterrupt):
            module.main(load(module.Config, None, [*common, f"output_dir={tmp_path / 'cut'}"]))
    finally:
        setattr(SupervisedLearner, step_method, real_step)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    resumed = module.main(load(module.Config, None, [*common, f"output_dir={tmp_path / 'cut'}", "resume=true"]))

    assert resumed["steps"] == whole["steps"] == 7
    a = load_file(str(Path(whole["checkpoint"]) / "model.safetensors"))
    b = load_file(str(Path(resumed["checkpoint"]) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]  # nothing logged twice, nothing missing
    if recipe == "sft":
        assert resumed["final_loss"] == pytest.approx(whole["final_loss"], abs=1e-6)
