"""`rlkit run` as a user sees it, through a subprocess: bad input stops at once with one line, Ctrl-C says
where to continue and the run continues from there, a used output_dir is refused, the console is quiet
and the run ends with a summary."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rlkit.run import claim_output_dir

ROOT = Path(__file__).resolve().parents[2]
RLKIT = [sys.executable, "-m", "rlkit.cli"]
TINY_CONFIG = ["--config", "recipes/configs/r1_zero_tiny.yaml"]
OFFLINE = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: the Hub is unreachable, at once
SMALL = ["rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8", "data.max_test_examples=4",
         "learner.micro_batch_size=8", "reward.weights={tag_count: 1.0, think_format: 1.0}",
         "reward.accuracy=think_format"]


def _run(args, env_extra=None, timeout=120, cwd=ROOT):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    result = subprocess.run([*RLKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - start


def _lines(stderr: str) -> list[str]:
    """What a terminal shows once progress-bar redraws (carriage returns) are collapsed."""
    return [line.split("\r")[-1] for line in stderr.splitlines() if line.split("\r")[-1].strip()]


def _finished_run(path: Path) -> None:
    """The folder a finished r1_zero run leaves: its record, metrics, events and a checkpoint."""
    claim = claim_output_dir(path, recipe="r1_zero", resume=False, resume_requested=False, overwrite=False,
                             command=["rlkit", "run", "r1_zero"])
    (path / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.3}\n')
    (path / "tensorboard").mkdir()
    (path / "checkpoints" / "step_000060").mkdir(parents=True)
    (path / "checkpoints" / "step_000060" / "COMPLETE").write_text("ok\n")
    claim.finish("finished")


def test_every_bad_input_stops_within_seconds_with_one_line_naming_it(tmp_path):
    _finished_run(tmp_path / "used")
    # the bad inputs a first hour with the tool met (the Hub offline and a missing split or column are
    # checked in process in test_data_sources.py; a model folder without weights there too)
    cases = [  # (overrides, what stderr must say, extra environment)
        (["model.path=./no/such/model"], "model path not found: model.path='./no/such/model'", None),
        (["model.path=some-org/some-model"], "the Hugging Face Hub is unreachable", OFFLINE),
        (["data.train=no_such.jsonl"], "dataset not found: data.train='no_such.jsonl'", None),
        (["reward.weights={mathaccuracy: 1.0}"], "unknown reward 'mathaccuracy'", None),
        (["algo.advantage=grpoo"], "algo.advantage='grpoo' is not a known advantage estimator", None),
        (["rollout.engine=foo"], "rollout.engine='foo' is not a known rollout engine", None),
        (["rollout.group_size=1"], "grpo needs group_size >= 2", None),
        (["rollout.device=cuda"], "ask for GPUs; the cluster has none", None),
        (["resume=true"], "resume=true, but there is no run to continue in output_dir", None),
        ([f"output_dir={tmp_path / 'used'}"], "already holds a finished r1_zero run", None),
    ]
    used_before = sorted(str(p.relative_to(tmp_path / "used")) for p in (tmp_path / "used").rglob("*"))

    def attempt(i_case):
        i, (overrides, _, env) = i_case  # a case's own output_dir=... comes later and wins
        return _run(["run", "r1_zero", *TINY_CONFIG, f"output_dir={tmp_path / f'case{i}'}", *overrides], env)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: as fast as in turn, and each case still timed
        results = list(pool.map(attempt, enumerate(cases)))
    for (overrides, expected, _), (result, seconds) in zip(cases, results):
        lines = _lines(result.stderr)
        assert result.returncode != 0, overrides
        assert expected in result.stderr, (overrides, result.stderr[-2000:])
        assert len(lines) <= 5 and "Traceback" not in result.stderr, (overrides, lines)
        assert "Started a local Ray" not in result.stderr, overrides  # stopped before any actor started
        assert seconds < 30, (overrides, seconds)
    assert not any((tmp_path / f"case{i}").exists() for i in range(len(cases)))  # failed starts leave nothing
    assert sorted(str(p.relative_to(tmp_path / "used")) for p in (tmp_path / "used").rglob("*")) == used_before


def test_sft_side_recipes_find_the_shipped_model_from_any_folder_and_never_mix_runs(tmp_path):
    # from a folder outside the checkout, the config's relative model and data paths are found from the
    # config file's project; a second run into the same folder is refused with one line
    config = ["--config", str(ROOT / "recipes/configs/sft_tiny.yaml"), "output_dir=sft", "optim.max_steps=1",
              "eval.test=", "data.max_examples=32"]
    first, _ = _run(["run", "sft", *config], cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["steps"] == 1 and Path(summary["model"]).resolve() == ROOT / "data/models/tiny-moe"
    assert "accuracy not measured" in first.stdout
    second, seconds = _run(["run", "sft", *config], cwd=tmp_path)
    assert second.returncode != 0 and "already holds a finished sft run" in second.stderr, second.stderr
    assert len(_lines(second.stderr)) <= 5 and seconds < 30
    missing, _ = _run(["run", "rejection_sampling", "--config", str(ROOT / "recipes/configs/rejection_sampling_tiny.yaml"),
                       "output_dir=rs", "model.path=./no/such/model"], cwd=tmp_path)
    assert "model path not found: model.path='./no/such/model'" in missing.stderr, missing.stderr
    assert len(_lines(missing.stderr)) <= 5 and not (tmp_path / "rs").exists()


def test_ctrl_c_says_how_to_continue_and_the_run_continues_quietly_to_a_summary(random_tiny_model, tiny_prompts,
                                                                              tmp_path):
    out = tmp_path / "run"
    args = ["run", "r1_zero", f"model.path={random_tiny_model}", f"data.train={tiny_prompts}",
            f"data.test={tiny_prompts}", f"output_dir={out}", *SMALL, "steps=40", "save_every=2", "eval_every=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*RLKIT, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        marker = out / "checkpoints" / "step_000002" / "COMPLETE"
        deadline = time.time() + 180
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "no checkpoint before Ctrl-C"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground job on Ctrl-C
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    said = [line for line in _lines(stderr) if line.startswith("rlkit:")]
    assert len(said) == 1 and said[0].startswith("rlkit: interrupted; to continue from "), _lines(stderr)
    saved = re.search(r"step_(\d+)", said[0])
    assert saved, said
    saved = int(saved.group(1))
    command = shlex.split(said[0].split(": ", 2)[2])
    assert command[:3] == ["rlkit", "run", "r1_zero"] and command[-1] == "resume=true"

    # the command it printed (stopped sooner), exactly as the user would paste it
    resumed, _ = _run([*command[1:], f"steps={saved + 2}"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {out / 'checkpoints' / f'step_{saved:06d}'} at step {saved}" in resumed.stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(saved + 3)), steps  # no gap, no repeat: it continued where it stopped

    # a quiet console: one progress bar, no third-party noise
    for noise in ("loading weights", "writing model shards", "repeated", "traceback", "warning", "deprecat"):
        assert noise not in resumed.stderr.lower(), (noise, resumed.stderr[-3000:])  # Ray's auth warning included
    bar = _lines(resumed.stderr)[-1]
    assert bar.startswith("r1_zero: 100%") and all(part in bar for part in ("reward ", "held-out ", "len ", "tok/s"))
    # the closing summary, on the console and in summary.json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["after"]["step"] == saved + 2 and summary["before"]["step"] == 0
    assert summary["accuracy_change"] == summary["after"]["accuracy"] - summary["before"]["accuracy"]
    assert Path(summary["checkpoint"]).name == f"step_{saved + 2:06d}" and Path(summary["report"]).exists()
    for text in ("held-out accuracy", f"{summary['after']['accuracy']:.3f}", summary["checkpoint"], summary["report"],
                 str(out / "summary.json")):
        assert text in resumed.stdout, (text, resumed.stdout)

    # the same folder again without resume=true: refused, the run left as it was
    again, seconds = _run(args)
    assert again.returncode == 1 and "already holds a finished r1_zero run" in again.stderr and seconds < 30
    assert len(_lines(again.stderr)) == 1
