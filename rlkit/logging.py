"""What a run shows and keeps: metrics.jsonl (one row per step), TensorBoard scalars, the report image,
the console (one progress bar, a closing summary) and the third-party output kept off it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

# Set before transformers, huggingface_hub and Ray are imported (they read them once, at import) and
# inherited by every actor process Ray starts on this machine. setdefault: the user's own settings win.
QUIET_ENV = {
    # transformers' "Loading weights" / "Writing model shards" bars: one per actor per checkpoint, they
    # break the run's progress bar
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # transformers' advice to users of its Trainer and pipelines (not of this library's calls)
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


# transformers (from about 5.20) deprecates the `past_key_values` argument that the engines and the learner pass
# it, once per process: a notice about this library's calls, in every actor, that a user can do nothing about
LIBRARY_DEPRECATIONS = ("`past_key_values` is deprecated", "`past_key_values`/`cache_params` are deprecated")


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_DROP_DEPRECATIONS = _DropMessages(LIBRARY_DEPRECATIONS)


def hide_library_deprecations() -> None:
    """Drop LIBRARY_DEPRECATIONS (a warning and a transformers log line) in this process: `import rlkit` runs
    it, so every actor does too. Other warnings are left alone."""
    for prefix in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=re.escape(prefix), category=FutureWarning)
    logging.getLogger("transformers.utils.generic").addFilter(_DROP_DEPRECATIONS)


def quiet_console() -> None:
    """Keep third-party output that is not the user's business off the console, at its source: progress
    bars of model loading and saving (here and in the actors) and library advice. Ray adds its log
    deduplication notice only to lines several actors print alike, which were these bars. Errors and
    warnings about the user's own inputs still show. `rlkit run --debug` skips this."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


class MetricsLogger:
    def __init__(self, output_dir: str | Path, *, tensorboard: bool = True, resume: bool = False,
                 start_step: int = 0) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if not resume:  # a new run: nothing of an earlier one may remain to mix with its curves
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.dir / "tensorboard", ignore_errors=True)
        else:  # rows logged after the checkpoint the run continues from are produced again
            self.truncate_after(start_step)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # on resume, events logged after the checkpoint are dropped: they are produced again
                purge = start_step + 1 if resume else None
                self.tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=purge)
            except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint: they will be produced again."""
        if not self.path.exists():
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


RL_PANELS = (("reward/mean", "train reward (mean)"), ("eval/accuracy", "held-out accuracy"),
             ("response_length/mean", "response length (tokens)"))


def write_report(metrics_path: str | Path, out_path: str | Path, title: str = "") -> Path:
    """Reward, held-out accuracy and response length against step, in one PNG."""
    from rlkit.reports import write_curves

    return write_curves(metrics_path, out_path, RL_PANELS, title=title)


class StepProgress:
    """The one progress bar of a training run: steps, then the figures a user watches: train reward,
    held-out accuracy once it has been measured, mean response length and sampled tokens per second
    (each shown when the step's metrics have it), and any `extra` metric (key -> label), e.g. a loss."""

    def __init__(self, desc: str, total: int, *, initial: int = 0, heldout: float | None = None,
                 extra: dict[str, str] | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.heldout = heldout
        self.extra = dict(extra or {})

    def update(self, metrics: dict[str, Any]) -> None:
        if isinstance(metrics.get("eval/accuracy"), (int, float)):
            self.heldout = float(metrics["eval/accuracy"])
        parts = []
        if isinstance(metrics.get("reward/mean"), (int, float)):
            parts.append(f"reward {metrics['reward/mean']:.2f}")
        if self.heldout is not None:
            parts.append(f"held-out {self.heldout:.3f}")
        if isinstance(metrics.get("response_length/mean"), (int, float)):
            parts.append(f"len {metrics['response_length/mean']:.0f}")
        if isinstance(metrics.get("throughput/tokens_per_s"), (int, float)):
            parts.append(f"{metrics['throughput/tokens_per_s']:.0f} tok/s")
        parts += [f"{label} {metrics[key]:.4g}" for key, label in self.extra.items()
                  if isinstance(metrics.get(key), (int, float))]
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def print_summary(summary: dict[str, Any], *, out: TextIO | None = None,
                  summary_path: str | Path | None = None) -> None:
    """The closing lines of a run: held-out accuracy and its change, wall time, where its outputs are."""
    out = out or sys.stdout
    steps = f"{summary.get('steps')} steps"
    if summary.get("start_step"):
        steps = f"steps {summary['start_step']}-{summary.get('steps')} (resumed)"
    lines = [f"{summary.get('recipe', 'run')}: {steps} in {_duration(summary.get('wall_time_s'))}"]
    before, after = summary.get("before") or {}, summary.get("after") or {}
    if "accuracy" in before and "accuracy" in after:
        at = {k: f" (step {d['step']})" if "step" in d else "" for k, d in (("before", before), ("after", after))}
        lines.append(f"  held-out accuracy  {before['accuracy']:.3f}{at['before']} -> {after['accuracy']:.3f}"
                     f"{at['after']}, {after['accuracy'] - before['accuracy']:+.3f}")
    elif "accuracy" in after:
        lines.append(f"  held-out accuracy  {after['accuracy']:.3f}")
    for label, key in (("checkpoint", "checkpoint"), ("report", "report")):
        if summary.get(key):
            lines.append(f"  {label:<18} {summary[key]}")
    if summary_path:
        lines.append(f"  {'summary':<18} {summary_path}")
    print("\n".join(lines), file=out, flush=True)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v
