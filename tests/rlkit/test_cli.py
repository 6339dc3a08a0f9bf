"""The command line: help lists the recipes; eval scores a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rlkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_recipes():
    result = _cli("--help")
    assert result.returncode == 0
    assert "rlkit run <recipe>" in result.stdout
    assert "r1_zero" in result.stdout  # found by scanning recipes/


def test_unknown_recipe_names_the_known_ones():
    result = _cli("run", "r2_zero")
    assert result.returncode != 0 and "unknown recipe 'r2_zero'" in result.stderr and "r1_zero" in result.stderr


def test_eval_reports_accuracy_of_a_checkpoint(random_tiny_model, tmp_path):
    data = tmp_path / "eval.jsonl"
    # the random model can't answer; a reward file that accepts everything makes the count checkable
    data.write_text("".join(json.dumps({"prompt": f"What is {i} ?", "answer": str(i)}) + "\n" for i in range(3)))
    always = tmp_path / "always.py"
    always.write_text("def always(completions, **kw):\n    return [1.0] * len(completions)\n")
    result = _cli("eval", "--model", random_tiny_model, "--data", str(data), "--k", "2", "--max-new-tokens", "4",
                  "--reward", f"{always}:always", "--template", "plain", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] == 1.0 and metrics["avg@2"] == 1.0 and metrics["pass@2"] == 1.0
    assert 0 < metrics["response_length"] <= 4  # at most --max-new-tokens tokens per sample
