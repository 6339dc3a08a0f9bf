"""Scale-out through the recipe, as a user runs it: two learner ranks on this machine, a real Ray
cluster started with `ray start --head`, actors killed mid-run (kill -9), and requests that cannot
be met failing fast."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
        "data.max_test_examples=4", "learner.micro_batch_size=4", "tensorboard=false", "report=false",
        "reward.weights={tag_count: 1.0, think_format: 1.0}", "reward.accuracy=think_format"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cmd(model, prompts, out, *extra):
    return [sys.executable, "-m", "rlkit.cli", "run", "r1_zero", f"model.path={model}", f"data.train={prompts}",
            f"data.test={prompts}", f"output_dir={out}", *TINY, *extra]


def _steps(out) -> list[int]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    found.append((child, f.read().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                continue
            todo.append(child)
    return found


def _kill_actor_mid_run(proc: subprocess.Popen, out: Path, actor: str) -> None:
    """Once the run has logged step 2, kill -9 one process of `actor` ("RolloutActor" / "LearnerActor")."""
    deadline = time.time() + 180
    while max(_steps(out), default=-1) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before step 2"
        time.sleep(0.2)
    victims = [pid for pid, cmd in _descendants(proc.pid) if cmd.startswith(f"ray::{actor}")]
    assert victims, f"no {actor} process found under the run"
    os.kill(victims[0], signal.SIGKILL)


def test_two_learner_ranks_start_on_two_cores_and_train(random_tiny_model, tiny_prompts, tmp_path):
    out = tmp_path / "two_ranks"
    run = subprocess.run(_cmd(random_tiny_model, tiny_prompts, out, "steps=3", "learner.num_learners=2"), cwd=ROOT,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _steps(out) == [0, 1, 2, 3]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["learner/tokens"] > 0 for r in rows[1:])


def test_a_killed_rollout_actor_is_replaced_and_no_step_is_lost_or_repeated(random_tiny_model, tiny_prompts,
                                                                           tmp_path):
    out = tmp_path / "rollout_killed"
    proc = subprocess.Popen(_cmd(random_tiny_model, tiny_prompts, out, "steps=8", "eval_every=100"), cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _kill_actor_mid_run(proc, out, "RolloutActor")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert "rollout actor 0 died" in stderr
    assert _steps(out) == list(range(9))  # every step once, in order


def test_a_killed_learner_stops_the_run_clearly_and_resume_continues(random_tiny_model, tiny_prompts, tmp_path):
    out = tmp_path / "learner_killed"
    cmd = _cmd(random_tiny_model, tiny_prompts, out, "steps=30", "eval_every=100", "save_every=2")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _kill_actor_mid_run(proc, out, "LearnerActor")
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "a learner rank died" in stderr and "resume=true" in stderr, stderr[-2000:]
    saved = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*") if (p / "COMPLETE").exists())
    assert saved, "no checkpoint before the kill"
    resumed = subprocess.run([*cmd, "resume=true", f"steps={saved[-1] + 2}"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _steps(out) == list(range(saved[-1] + 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_recipe_joins_a_ray_cluster_started_with_ray_start(random_tiny_model, tiny_prompts, tmp_path):
    ray_bin = Path(sys.executable).parent / "ray"
    # a short path of its own: Ray's socket paths must fit in 107 bytes
    port, temp_dir = _free_port(), Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    head = subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                           "--num-cpus=2", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                           "--disable-usage-stats"], env=ENV, capture_output=True, text=True, timeout=120)
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        out = tmp_path / "on_cluster"
        run = subprocess.run(_cmd(random_tiny_model, tiny_prompts, out, "steps=2", "ray_address=auto"), cwd=ROOT,
                             env={**ENV, "RAY_ADDRESS": f"127.0.0.1:{port}"}, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Connected to Ray cluster" in run.stderr + run.stdout  # joined, did not start its own
        assert _steps(out) == [0, 1, 2]
    finally:
        # stop this cluster only (`ray stop` would stop every Ray on the machine)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if str(temp_dir).encode() in f.read():
                            os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    continue
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("args, message", [
    (["rollout.device=cuda"], "ask for GPUs; the cluster has none"),
    (["ray_address=127.0.0.1:1"], "no Ray cluster answers at ray_address='127.0.0.1:1'"),
])
def test_requests_that_cannot_be_met_fail_within_seconds(random_tiny_model, tiny_prompts, tmp_path, args, message):
    start = time.monotonic()
    run = subprocess.run(_cmd(random_tiny_model, tiny_prompts, tmp_path / "x", *args), cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
    assert time.monotonic() - start < 60
