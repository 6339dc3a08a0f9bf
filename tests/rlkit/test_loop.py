"""The whole R1-Zero loop under a real local Ray: a few steps, a kill, a resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from rlkit.cli import load_recipe
from rlkit.config import load

ROOT = Path(__file__).resolve().parents[2]
TINY = ["rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
        "data.max_test_examples=4", "learner.micro_batch_size=4", "tensorboard=false",
        "reward.weights={tag_count: 1.0, think_format: 1.0}", "reward.accuracy=think_format"]


def _overrides(model, prompts, out, *extra):
    return [f"model.path={model}", f"data.train={prompts}", f"data.test={prompts}", f"output_dir={out}", *TINY, *extra]


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_loop_runs_and_writes_metrics_checkpoint_report(random_tiny_model, tiny_prompts, tmp_path):
    recipe = load_recipe("r1_zero")
    out = tmp_path / "run"
    cfg = load(recipe.Config, None, _overrides(random_tiny_model, tiny_prompts, out, "steps=3", "eval_every=2",
                                               "save_every=2"))
    recipe.main(cfg)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # eval at step 0, then one row per step
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[2] and "eval/accuracy" in rows[3]
    for r in rows[1:]:
        for key in ("reward/mean", "response_length/mean", "time/step_s", "actor/clip_frac_low", "moe/load_max"):
            assert key in r, key
    assert (out / "report.png").stat().st_size > 1000
    final = out / "checkpoints" / "step_000003"
    assert (final / "COMPLETE").exists()
    # the checkpoint is plain HF format: loadable with no rlkit code
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)


def test_resume_after_kill_continues_from_saved_step(random_tiny_model, tiny_prompts, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rlkit.cli", "run", "r1_zero",
           *_overrides(random_tiny_model, tiny_prompts, out, "steps=40", "save_every=2", "eval_every=100")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = out / "checkpoints" / "step_000002" / "COMPLETE"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), "the first run never wrote its step-2 checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: as if the machine died
    proc.wait()
    killed_rows = _rows(out)
    saved = max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*") if (p / "COMPLETE").exists())
    assert saved < 40  # it really was interrupted

    result = subprocess.run([*cmd, "resume=true", "steps=" + str(saved + 2)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and f"at step {saved}" in result.stdout
    steps = [r["step"] for r in _rows(out)]
    # rows after the checkpoint were dropped and redone: one row per step, no gaps, no repeats
    assert steps == list(range(0, saved + 3)), steps
    assert len(killed_rows) >= saved + 1
    assert (out / "checkpoints" / f"step_{saved + 2:06d}" / "COMPLETE").exists()


def _run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rlkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_bad_input_stops_with_one_clear_message(random_tiny_model, tiny_prompts, tmp_path):
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"prompt": "What is 1 plus 1 ?"}\n')
    typo = tmp_path / "typo.yaml"
    typo.write_text("rollout:\n  group_sise: 4\n")
    cases = [
        (["run", "r1_zero", "model.path=./no/such/model"], "model path not found"),
        (["run", "r1_zero", f"model.path={random_tiny_model}", f"data.train={no_answer}"], "no column(s) ['answer']"),
        (["run", "r1_zero", "--config", str(typo)], "rollout.group_sise"),
        (["run", "r1_zero", f"model.path={random_tiny_model}", f"data.train={tiny_prompts}",
          "rollout.max_new_tokens=124"], "longer than the"),
    ]
    for args, expected in cases:
        result = _run_cli(*args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr[-2000:])
        assert "Started a local Ray" not in result.stderr  # stopped before any actor started
