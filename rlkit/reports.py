"""Report images and summaries of the SFT-side recipes (the RL report is `rlkit.logging.write_report`).

- `write_curves`: chosen metrics against step, one panel each (SFT loss, DPO margin, ...).
- `write_model_bars`: held-out accuracy and mean response length of several models side by side
  (before/after, teacher/student, long/short, the stages of a pipeline).
- `write_summary`: summary.json, the final figures of a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    path = Path(output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_path: str | Path, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def write_curves(metrics_path: str | Path, out_path: str | Path, panels: Sequence[tuple[str, str]],
                 title: str = "") -> Path:
    """One panel per (metric key, label), the metric against `step` from metrics.jsonl."""
    from rlkit.logging import read_metrics

    plt = _pyplot()
    rows = read_metrics(metrics_path) if Path(metrics_path).exists() else []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 20 else None, markersize=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(plt, fig, out_path, title)


def write_model_bars(entries: Sequence[dict[str, Any]], out_path: str | Path, title: str = "",
                     curves: Sequence[tuple[str, Sequence[tuple[float, float]]]] = ()) -> Path:
    """Bars of `accuracy` and `mean_length` for entries {name, accuracy, mean_length}; optional
    curves (label, [(x, y), ...]) in a third panel, e.g. held-out accuracy along RL steps."""
    plt = _pyplot()
    n_panels = 3 if curves else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(4.8 * n_panels, 4.0))
    names = [str(e["name"]) for e in entries]
    for ax, key, label in ((axes[0], "accuracy", "held-out accuracy"),
                           (axes[1], "mean_length", "mean response tokens")):
        values = [float(e.get(key) or 0.0) for e in entries]
        bars = ax.bar(range(len(values)), values, color="tab:blue" if key == "accuracy" else "tab:orange")
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    if curves:
        for label, pts in curves:
            if pts:
                xs, ys = zip(*pts)
                axes[2].plot(xs, ys, marker="o", markersize=3, label=label)
        axes[2].set_title("held-out accuracy along RL")
        axes[2].set_xlabel("RL step")
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=8)
    return _save(plt, fig, out_path, title)
