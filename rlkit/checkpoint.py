"""Checkpoints: HF-format weights (usable as-is for eval/serving) plus everything to resume.

Layout: <output_dir>/checkpoints/step_000020/ holds config.json + model.safetensors +
tokenizer files (save_pretrained), learner_state.pt (optimizer, step, RNG) and
driver_state.pt (data position, samplers, partial-rollout buffer, driver RNG). A COMPLETE
marker is written last: a run killed mid-save leaves a directory that `latest` skips.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

MARKER = "COMPLETE"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:06d}"


def rng_state() -> dict[str, Any]:
    """Every random stream a process draws from (torch CPU, Python, NumPy): saved so a resumed run
    continues the same draws."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save(directory: Path, *, learners, tokenizer, driver_state: dict[str, Any], keep: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).unlink(missing_ok=True)
    learners.save(str(directory))
    tokenizer.save_pretrained(directory)
    state = dict(driver_state)
    state["rng"] = rng_state()
    torch.save(state, directory / "driver_state.pt")
    (directory / MARKER).write_text("ok\n")
    _prune(directory.parent, keep)
    return directory


def latest(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / MARKER).exists()) if root.is_dir() else []
    return done[-1] if done else None


def resume_from(output_dir: str | Path, resume: bool, learner) -> tuple[Path | None, int, dict[str, Any]]:
    """Where a run with `resume` set continues: the last complete checkpoint in output_dir (None: a fresh
    start), the step its learner was restored to, and the driver state saved beside it (RNG restored)."""
    last = latest(output_dir) if resume else None
    if last is None:
        return None, 0, {}
    step = learner.load(str(last))
    return last, step, load_driver_state(last)


def resume_hint(output_dir: str | Path) -> str:
    """What to tell a user whose run stopped: where it can continue from."""
    last = latest(output_dir)
    if last is None:
        return "no checkpoint was saved yet, so the run starts over"
    return f"continue from {last} with resume=true (same output_dir)"


def load_driver_state(directory: Path) -> dict[str, Any]:
    state = torch.load(directory / "driver_state.pt", weights_only=False)
    set_rng_state(state.pop("rng"))
    return state


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    done = sorted(p for p in root.glob("step_*") if (p / MARKER).exists())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
