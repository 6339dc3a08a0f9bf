"""Multi-stage runs with per-stage resume: a finished stage is never run again.

Each stage writes into `<output_dir>/<name>/`; when its function returns, its summary and the
config it ran with are written to `STAGE_COMPLETE.json` there (atomically, last). Running the
same command again skips every stage that has the marker and hands back its summary, so a run
killed in stage 3 continues with stage 3. Once a stage runs, every later stage runs too (its
input may have changed), whatever markers it has. A finished stage whose config has since changed is an
error naming the keys: its outputs no longer match the command, and silently reusing or
overwriting them would both lose something.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

MARKER = "STAGE_COMPLETE.json"


class StageConfigChanged(RuntimeError):
    """A finished stage whose recorded config differs from the one asked for now."""


class StageRunner:
    def __init__(self, output_dir: str | Path, *, resume: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.ran: list[str] = []  # stages run by this runner
        self.skipped: list[str] = []  # stages found finished and not run again
        self.seconds: dict[str, float] = {}  # wall time of each stage (a skipped one: when it ran)

    def done(self, name: str) -> bool:
        return (self.output_dir / name / MARKER).is_file()

    def run(self, name: str, fn: Callable[[Path], dict[str, Any]], config: Any = None) -> dict[str, Any]:
        """`fn(stage_dir) -> summary` unless the stage finished before (then its recorded summary). The
        stage's wall time is recorded beside its summary and kept in `self.seconds`."""
        stage_dir = self.output_dir / name
        marker = stage_dir / MARKER
        plain = _plain(config)
        if marker.is_file():
            if self.resume and not self.ran:
                recorded = json.loads(marker.read_text())
                if recorded.get("config") != plain:
                    keys = _differing_keys(recorded.get("config"), plain)
                    raise StageConfigChanged(
                        f"stage {name!r} in {self.output_dir} finished with a different config "
                        f"({len(keys)} keys differ: {keys[:6]}); use a new output_dir, or resume=false to redo "
                        "every stage"
                    )
                print(f"stage {name}: finished before, not run again ({marker})", flush=True)
                self.skipped.append(name)
                # (folders from before the time was recorded beside the summary kept it inside)
                self.seconds[name] = recorded.get("seconds", recorded["summary"].get("seconds", 0.0))
                return recorded["summary"]
            shutil.rmtree(stage_dir)  # redo from scratch, never mix old and new outputs
        stage_dir.mkdir(parents=True, exist_ok=True)
        print(f"stage {name}: running in {stage_dir}", flush=True)
        start = time.perf_counter()
        summary = fn(stage_dir)
        self.seconds[name] = time.perf_counter() - start
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "config": plain, "seconds": self.seconds[name]}, indent=1,
                                  default=str))
        os.replace(tmp, marker)
        self.ran.append(name)
        return summary


def configured(config: Any, **dotted: Any) -> Any:
    """A deep copy of a (nested dataclass) config with dotted fields set: how a multi-stage recipe
    points a stage's config at the previous stage's output, e.g.
    ``configured(cfg.rl, output_dir=str(d), **{"model.path": teacher})``."""
    import copy

    out = copy.deepcopy(config)
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = getattr(node, part)
        if not hasattr(node, last):
            raise AttributeError(f"config has no field {key!r}")
        setattr(node, last, value)
    return out


def read_curve(metrics_path: str | Path, key: str = "eval/accuracy") -> list[tuple[int, float]]:
    """(step, value) of one metric from a run's metrics.jsonl, e.g. the held-out accuracy along RL."""
    path = Path(metrics_path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def _plain(config: Any) -> Any:
    """A JSON-comparable form of a config (dataclasses become dicts, tuples lists)."""
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _plain(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(k): _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    return json.loads(json.dumps(config, default=str))


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<config>"]
