"""Per-stage resume of multi-stage recipes: a finished stage is not run again."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rlkit.stages import MARKER, StageConfigChanged, StageRunner, configured, read_curve


def _pipeline(out, calls, *, fail_at=None, resume=True, lr=0.1):
    """Three stages, each reading the previous one's output file, as the recipes chain checkpoints."""
    runner = StageRunner(out, resume=resume)

    def stage(name, previous):
        def run(d):
            calls.append(name)
            if name == fail_at:
                raise RuntimeError(f"killed in {name}")
            value = (json.loads(previous.read_text())["value"] if previous else 0) + 1
            (d / "out.json").write_text(json.dumps({"value": value}))
            return {"checkpoint": str(d / "out.json"), "value": value}
        return run

    a = runner.run("1_a", stage("1_a", None), config={"lr": lr})
    b = runner.run("2_b", stage("2_b", Path(a["checkpoint"])), config={"from": a["checkpoint"]})
    c = runner.run("3_c", stage("3_c", Path(b["checkpoint"])), config={"from": b["checkpoint"]})
    return runner, c


def test_a_killed_run_continues_with_the_stage_it_was_in(tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="killed in 2_b"):
        _pipeline(tmp_path, calls, fail_at="2_b")
    assert calls == ["1_a", "2_b"]
    assert (tmp_path / "1_a" / MARKER).exists() and not (tmp_path / "2_b" / MARKER).exists()
    mtime = (tmp_path / "1_a" / "out.json").stat().st_mtime_ns

    calls.clear()
    runner, c = _pipeline(tmp_path, calls)
    assert calls == ["2_b", "3_c"]  # stage 1 was finished: not run again
    assert runner.skipped == ["1_a"] and runner.ran == ["2_b", "3_c"]
    assert c["value"] == 3 and (tmp_path / "1_a" / "out.json").stat().st_mtime_ns == mtime

    calls.clear()
    runner, c = _pipeline(tmp_path, calls)  # everything finished: nothing runs, same summaries
    assert calls == [] and runner.skipped == ["1_a", "2_b", "3_c"] and c["value"] == 3


def test_each_stage_s_wall_time_is_recorded_and_survives_a_skip(tmp_path):
    first, c = _pipeline(tmp_path, [])
    assert set(first.seconds) == {"1_a", "2_b", "3_c"} and all(v >= 0 for v in first.seconds.values())
    assert json.loads((tmp_path / "3_c" / MARKER).read_text())["seconds"] == first.seconds["3_c"]
    again, _ = _pipeline(tmp_path, [])  # nothing runs: the times are those recorded when the stages ran
    assert again.seconds == first.seconds


def test_a_stage_run_again_makes_every_later_stage_run_again(tmp_path):
    _pipeline(tmp_path, [])
    (tmp_path / "2_b" / MARKER).unlink()  # e.g. removed by hand to redo stage 2
    calls = []
    _pipeline(tmp_path, calls)
    assert calls == ["2_b", "3_c"]  # 3_c had a marker, but its input was made again


def test_a_changed_config_is_an_error_not_a_silent_reuse(tmp_path):
    _pipeline(tmp_path, [])
    with pytest.raises(StageConfigChanged, match=r"stage '1_a' .* different config \(1 keys differ: \['lr'\]\)"):
        _pipeline(tmp_path, [], lr=0.2)
    calls = []
    _pipeline(tmp_path, calls, resume=False, lr=0.2)  # resume=false redoes every stage
    assert calls == ["1_a", "2_b", "3_c"]


def test_configured_sets_dotted_fields_on_a_copy():
    @dataclass
    class Inner:
        path: str = "a"

    @dataclass
    class Outer:
        output_dir: str = "x"
        model: Inner = field(default_factory=Inner)

    cfg = Outer()
    new = configured(cfg, output_dir="y", **{"model.path": "b"})
    assert (new.output_dir, new.model.path) == ("y", "b") and (cfg.output_dir, cfg.model.path) == ("x", "a")
    with pytest.raises(AttributeError, match="model.nope"):
        configured(cfg, **{"model.nope": 1})


def test_read_curve(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.3}\n{"step": 1, "loss": 2}\n'
                                            '{"step": 10, "eval/accuracy": 0.5}\n')
    assert read_curve(tmp_path / "metrics.jsonl") == [(0, 0.3), (10, 0.5)]
    assert read_curve(tmp_path / "missing.jsonl") == []
