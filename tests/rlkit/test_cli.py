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


# ----------------------------------------------------------------------------- discoverability
def test_version():
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("rlkit 0.1.0 (torch "), result.stdout


def test_recipes_lists_each_recipe_with_its_configs():
    result = _cli("recipes")
    assert result.returncode == 0, result.stderr
    listed = result.stdout
    for config in (ROOT / "recipes" / "configs").glob("*.yaml"):
        recipe = config.read_text().split()[3]  # "# rlkit run <recipe> --config ..."
        assert recipe in listed and f"recipes/configs/{config.name}" in listed, config.name


def test_rewards_lists_every_registered_name():
    import rewards

    result = _cli("rewards")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:] if line.startswith("  ")]
    assert names == rewards.available()
    assert "math_accuracy" in names and "file.py:function" in result.stdout


def test_recipe_help_lists_keys_with_types_defaults_and_docs():
    from rlkit.cli import load_recipe
    from rlkit.config import describe

    result = _cli("run", "r1_zero", "--help")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    for key in describe(load_recipe("r1_zero").Config):
        assert key.key in lines, key.key
    assert lines["rollout.group_size"].split()[1:4] == ["int", "8", "G"]  # type, default, its comment
    assert "ddp | fsdp" in lines["learner.strategy"] and "{math_accuracy: 1.0, think_format: 1.0}" in lines["reward.weights"]
    assert "recipes/configs/r1_zero_tiny.yaml" in result.stdout and "--overwrite" in result.stdout
    # with a config, the values it gives
    with_config = _cli("run", "r1_zero", "--config", "recipes/configs/r1_zero_tiny.yaml", "steps=7", "--help")
    steps = [line for line in with_config.stdout.splitlines() if line.split()[:1] == ["steps"]]
    assert steps and steps[0].split()[1:3] == ["int", "7"], with_config.stdout[-2000:]


def test_library_deprecation_notices_are_dropped_in_every_process_that_imports_rlkit():
    # transformers >= ~5.20 says this once per process about the `past_key_values` argument rlkit passes; an
    # actor imports rlkit to run, so a fresh interpreter doing the same shows what an actor prints
    code = ("import logging, warnings, rlkit\n"
            "warnings.warn('`past_key_values` is deprecated and will be removed in 5.40.0. Use `cache`.', FutureWarning)\n"
            "log = logging.getLogger('transformers.utils.generic')\n"
            "log.warning('`past_key_values`/`cache_params` are deprecated. Use `cache` instead.')\n"
            "log.warning('a warning about the model stays')\n"
            "warnings.warn('a FutureWarning of the user stays', FutureWarning)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "past_key_values" not in result.stderr, result.stderr
    assert "a warning about the model stays" in result.stderr and "a FutureWarning of the user stays" in result.stderr
