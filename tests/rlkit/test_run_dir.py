"""One run per output folder: a folder holding another run is refused unless the config resumes it or
the command line replaces it; resume=true with nothing to resume is an error; failed starts leave nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlkit.run import OutputDirError, claim_output_dir, continue_hint, inspect_dir, summarize

CMD = ["rlkit", "run", "r1_zero", "output_dir=out"]


def _claim(path, recipe="r1_zero", resume=False, requested=None, overwrite=False):
    requested = resume if requested is None else requested
    return claim_output_dir(path, recipe=recipe, resume=resume, resume_requested=requested, overwrite=overwrite,
                            command=CMD)


def _fake_run(path, *, checkpoint_step=None, status="finished"):
    """The files a finished r1_zero run leaves (metrics, TensorBoard events, report, checkpoints)."""
    claim = _claim(path)
    (path / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.25}\n{"step": 2, "eval/accuracy": 0.5}\n')
    (path / "tensorboard").mkdir()
    (path / "tensorboard" / "events.out.tfevents.1").write_text("x")
    (path / "report.png").write_bytes(b"png")
    if checkpoint_step is not None:
        ckpt = path / "checkpoints" / f"step_{checkpoint_step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "COMPLETE").write_text("ok\n")
    claim.finish(status)


def test_a_new_folder_is_claimed_and_the_end_recorded(tmp_path):
    out = tmp_path / "new"
    claim = _claim(out)
    record = json.loads((out / "run.json").read_text())
    assert (record["recipe"], record["status"]) == ("r1_zero", "running")
    assert record["command"] == "rlkit run r1_zero output_dir=out"
    (out / "metrics.jsonl").write_text("{}\n")
    claim.finish("finished")
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_finished_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "done"
    _fake_run(out, checkpoint_step=2)
    with pytest.raises(OutputDirError, match=r"already holds a finished r1_zero run, last checkpoint step_000002; "
                                             r"resume=true continues it, --overwrite replaces it"):
        _claim(out)
    _claim(out, resume=True).finish("finished")  # continuing it is fine
    assert (out / "report.png").exists()


def test_overwrite_deletes_the_earlier_runs_outputs_and_nothing_else(tmp_path):
    out = tmp_path / "again"
    _fake_run(out, checkpoint_step=2)
    (out / "notes.txt").write_text("mine")  # not a run output: kept
    claim = _claim(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [".replaced", "notes.txt", "run.json"]
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    (out / "metrics.jsonl").write_text('{"step": 0}\n')  # the new run's first output
    claim.finish("finished")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "notes.txt", "run.json"]
    assert (out / "metrics.jsonl").read_text() == '{"step": 0}\n'


def test_an_overwrite_that_fails_before_writing_puts_the_earlier_run_back(tmp_path):
    out = tmp_path / "kept"
    _fake_run(out, checkpoint_step=2)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    _claim(out, overwrite=True).finish("failed")  # e.g. a typo in the new command's model path
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_resume_with_nothing_to_resume_names_the_folder(tmp_path):
    with pytest.raises(OutputDirError, match=rf"resume=true, but there is no run to continue in output_dir "
                                             rf"{tmp_path / 'none'} \(the folder does not exist\)"):
        _claim(tmp_path / "none", resume=True)
    out = tmp_path / "no_ckpt"
    _fake_run(out, status="interrupted")  # stopped before its first checkpoint
    with pytest.raises(OutputDirError, match=r"no complete checkpoint to continue from.*--overwrite starts it over"):
        _claim(out, resume=True)
    # a multi-stage recipe resumes by default (finished stages are kept): a fresh folder is no error there
    _claim(tmp_path / "stages", resume=True, requested=False)


def test_another_recipes_folder_is_refused_even_with_resume(tmp_path):
    out = tmp_path / "sft_run"
    claim = _claim(out, recipe="sft")
    (out / "summary.json").write_text("{}")
    claim.finish("finished")
    with pytest.raises(OutputDirError, match=r"holds a finished sft run, not a r1_zero run"):
        _claim(out, resume=True)


def test_a_folder_in_use_by_a_live_process_is_refused(tmp_path):
    out = tmp_path / "busy"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_output_dir(out, recipe="r1_zero", resume=False, resume_requested=False, overwrite=False, command=CMD)
        record = json.loads((out / "run.json").read_text())
        record["pid"] = sleeper.pid  # as if another rlkit process had claimed it
        (out / "run.json").write_text(json.dumps(record))
        with pytest.raises(OutputDirError, match=rf"in use by another run \(pid {sleeper.pid}"):
            _claim(out, overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_start_that_failed_before_writing_leaves_nothing(tmp_path):
    out = tmp_path / "failed"
    claim = _claim(out)
    (out / "config.yaml").write_text("steps: 1\n")  # bookkeeping only, no outputs
    claim.finish("failed")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    _claim(existing).finish("failed")
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]  # a folder it did not create stays


def test_continue_hint_is_the_command_with_resume(tmp_path):
    out = tmp_path / "stopped"
    _fake_run(out, checkpoint_step=4, status="interrupted")
    hint = continue_hint(out, ["rlkit", "run", "r1_zero", "resume=false", "steps=9"], resume=False)
    assert hint == f"to continue from {out}/checkpoints/step_000004: rlkit run r1_zero steps=9 resume=true"
    early = tmp_path / "early"
    _fake_run(early, status="interrupted")  # metrics and events, but no checkpoint yet
    assert continue_hint(early, CMD, resume=False) == f"no checkpoint was saved yet; to start over: {' '.join(CMD)} --overwrite"
    assert continue_hint(tmp_path / "nothing", CMD, resume=False).startswith("nothing was written yet")


def test_summary_has_held_out_accuracy_and_its_change(tmp_path):
    out = tmp_path / "summarized"
    _fake_run(out, checkpoint_step=2)
    s = summarize(out, recipe="r1_zero", steps=2, wall_time_s=12.34, checkpoint=out / "checkpoints" / "step_000002",
                  report=out / "report.png")
    assert s["before"]["accuracy"] == 0.25 and s["after"]["accuracy"] == 0.5
    assert s["accuracy_change"] == 0.5 - 0.25 and s["wall_time_s"] == 12.3
    assert s["checkpoint"].endswith("step_000002") and s["report"].endswith("report.png")
    assert inspect_dir(out).checkpoint.name == "step_000002"
    assert os.path.basename(s["metrics"]) == "metrics.jsonl"
