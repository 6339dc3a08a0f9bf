"""Run bookkeeping: one run per output folder, a record of it, how to continue it, its summary.

Two runs must never write into one folder: metrics.jsonl, TensorBoard events, report.png and the
checkpoints would mix (a later run pruning the earlier one's checkpoints, a report drawn from both).
`claim_output_dir` is called before a recipe starts (by `rlkit run`, for every recipe) and refuses
a folder that holds another run's outputs unless the config asks to continue it (`resume=true`) or
the command line asks to replace it (`--overwrite`, which removes the earlier run's outputs and
nothing else). `run.json` records which recipe wrote the folder, from which command, and whether
it finished, was interrupted or failed; a run that failed before writing anything leaves nothing,
and the run it was to replace is put back.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD = "run.json"
# What recipes write into output_dir (and into each stage folder of a multi-stage recipe).
OUTPUTS = ("metrics.jsonl", "summary.json", "report.png", "report_eval.png", "tensorboard", "checkpoints",
           "dataset.jsonl", "pairs.jsonl", "sft_data.jsonl", "STAGE_COMPLETE.json")
BOOKKEEPING = (RECORD, "config.yaml")  # written at the start: on their own they hold nothing to lose
SET_ASIDE = ".replaced"  # --overwrite: the earlier run waits here until the new one has written something


class OutputDirError(ValueError):
    """output_dir cannot be used by this run as asked."""


@dataclass
class RunDir:
    """What a folder holds, as far as runs go."""

    path: Path
    record: dict[str, Any] | None  # run.json, if an rlkit run wrote it
    outputs: list[Path] = field(default_factory=list)  # run outputs in it or in its stage folders
    checkpoint: Path | None = None  # newest complete checkpoint of a single-stage run
    stages: list[str] = field(default_factory=list)  # finished stages of a multi-stage run

    @property
    def holds_run(self) -> bool:
        return bool(self.outputs) or (self.record or {}).get("status") == "finished"

    def describe(self) -> str:
        rec = self.record or {}
        what = f"{_article(rec['status'])} {rec['status']} {rec.get('recipe', '')} run".replace("  ", " ") \
            if rec.get("status") else "run made earlier"
        if self.checkpoint is not None:
            what += f", last checkpoint {self.checkpoint.name}"
        elif self.stages:
            what += f", finished stages {', '.join(self.stages)}"
        return what


def inspect_dir(output_dir: str | Path) -> RunDir:
    from rlkit import checkpoint

    path = Path(output_dir)
    record = None
    if (path / RECORD).is_file():
        try:
            record = json.loads((path / RECORD).read_text())
        except (OSError, ValueError):
            record = {}
    found = RunDir(path, record)
    if not path.is_dir():
        return found
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name in OUTPUTS:
            found.outputs.append(entry)
        elif entry.is_dir() and any((entry / name).exists() for name in OUTPUTS):  # a stage folder
            found.outputs.append(entry)
            if (entry / "STAGE_COMPLETE.json").exists():
                found.stages.append(entry.name)
    found.checkpoint = checkpoint.latest(path)
    return found


@dataclass
class RunClaim:
    """A folder claimed for one run: `finish` records how it ended."""

    output_dir: Path
    created: bool  # the folder did not exist before this run
    replaced: Path | None = None  # the earlier run's outputs, set aside by --overwrite

    def finish(self, status: str, **extra: Any) -> None:
        path = self.output_dir / RECORD
        kept = status == "finished" or bool(inspect_dir(self.output_dir).outputs)
        if not kept:  # nothing was written but bookkeeping: leave the folder as the run found it
            for name in BOOKKEEPING:
                (self.output_dir / name).unlink(missing_ok=True)
        if kept:
            shutil.rmtree(self.output_dir / SET_ASIDE, ignore_errors=True)
        elif self.replaced is not None and self.replaced.is_dir():
            # a replacement that never got going loses nothing: the earlier run comes back
            for entry in self.replaced.iterdir():
                os.replace(entry, self.output_dir / entry.name)
            self.replaced.rmdir()
        if not kept:
            if self.created and self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
                self.output_dir.rmdir()
            return
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        record.update(status=status, ended=_now(), **extra)
        _write_json(path, record)


def claim_output_dir(output_dir: str | Path, *, recipe: str, resume: bool | None, resume_requested: bool,
                     overwrite: bool, command: list[str]) -> RunClaim:
    """Check that this run may write into `output_dir`, then record it there (run.json).

    `resume` is the config's value (None: the recipe cannot resume); `resume_requested` is true when
    resuming is something the user asked for (a recipe whose resume defaults to false), so that there
    being nothing to resume is an error rather than a fresh start.
    """
    found = inspect_dir(output_dir)
    path = found.path
    rec = found.record or {}
    if rec.get("status") == "running" and _alive(rec) and rec.get("pid") != os.getpid():
        raise OutputDirError(f"output_dir {path} is in use by another run (pid {rec['pid']}, started "
                             f"{rec.get('started', '?')}); choose another output_dir=")
    replaced = None
    if found.holds_run and overwrite:
        replaced = set_aside(found)
        found = inspect_dir(output_dir)
    foreign = bool(rec.get("recipe")) and rec.get("recipe") != recipe
    if found.holds_run:
        if foreign:
            raise OutputDirError(f"output_dir {path} holds {found.describe()}, not a {recipe} run; choose "
                                 f"another output_dir= (or --overwrite to delete that run's outputs)")
        if not resume:
            how = "resume=true continues it, " if resume is not None else ""
            raise OutputDirError(f"output_dir {path} already holds {found.describe()}; {how}--overwrite "
                                 f"replaces it, or choose another output_dir=")
        if resume_requested and found.checkpoint is None:
            raise OutputDirError(f"resume=true, but output_dir {path} has no complete checkpoint to continue "
                                 f"from (the run stopped before its first save); --overwrite starts it over")
    elif resume_requested:
        reason = "the folder does not exist" if not path.exists() else "no run has saved a checkpoint there"
        raise OutputDirError(f"resume=true, but there is no run to continue in output_dir {path} ({reason}); "
                             f"drop resume=true to start a new run, or point output_dir at the run to continue")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / RECORD, {"recipe": recipe, "status": "running", "command": shlex.join(command),
                                "started": _now(), "pid": os.getpid(), "host": socket.gethostname(),
                                "resumed_from": str(found.checkpoint) if resume and found.checkpoint else None})
    return RunClaim(path, created, replaced)


def set_aside(found: RunDir) -> Path:
    """Move an earlier run's outputs (the names in OUTPUTS, its stage folders) and its record into
    output_dir/.replaced, to be deleted once the new run has written something (`RunClaim.finish`); files of
    any other name stay where they are."""
    aside = found.path / SET_ASIDE
    shutil.rmtree(aside, ignore_errors=True)  # left by a replacing run that was killed: its run was replaced
    aside.mkdir()
    for entry in [*found.outputs, *(found.path / name for name in BOOKKEEPING)]:
        if entry.exists():
            os.replace(entry, aside / entry.name)
    return aside


def continue_hint(output_dir: str | Path, command: list[str], *, resume: bool | None) -> str:
    """How to pick a stopped run up again: the command to type, or why there is nothing to continue."""
    found = inspect_dir(output_dir)
    if not found.outputs:
        return "nothing was written yet; the same command starts it again"
    if resume is None:
        return f"outputs so far are in {output_dir}"
    if found.checkpoint is None and not found.stages:
        return "no checkpoint was saved yet; to start over: " + shlex.join([*command, "--overwrite"])
    args = [a for a in command if not a.startswith("resume=") and a != "--overwrite"]
    where = f" from {found.checkpoint}" if found.checkpoint is not None else ""
    return f"to continue{where}: " + shlex.join([*args, "resume=true"])


def summarize(output_dir: str | Path, *, recipe: str, steps: int, wall_time_s: float,
              checkpoint: str | Path | None, report: str | Path | None, start_step: int = 0) -> dict[str, Any]:
    """The final figures of an RL run from its metrics.jsonl: held-out accuracy first and last measured and
    the change, the last step's reward and response length, wall time (of this invocation, which began at
    `start_step` when resumed), where the checkpoint and report are."""
    from rlkit.logging import read_metrics

    metrics = Path(output_dir) / "metrics.jsonl"
    rows = read_metrics(metrics) if metrics.exists() else []
    evals = [r for r in rows if isinstance(r.get("eval/accuracy"), (int, float))]
    train = [r for r in rows if isinstance(r.get("reward/mean"), (int, float))]
    summary: dict[str, Any] = {"recipe": recipe, "steps": steps, "start_step": start_step,
                               "wall_time_s": round(wall_time_s, 1)}
    if evals:
        first, last = evals[0], evals[-1]
        summary["before"] = {"step": first["step"], "accuracy": first["eval/accuracy"],
                             "mean_length": first.get("eval/response_length")}
        summary["after"] = {"step": last["step"], "accuracy": last["eval/accuracy"],
                            "mean_length": last.get("eval/response_length")}
        summary["accuracy_change"] = last["eval/accuracy"] - first["eval/accuracy"]
    if train:
        summary["final_reward"] = train[-1]["reward/mean"]
        summary["final_response_length"] = train[-1].get("response_length/mean")
    summary["checkpoint"] = str(checkpoint) if checkpoint else None
    summary["report"] = str(report) if report else None
    summary["metrics"] = str(metrics)
    return summary


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
