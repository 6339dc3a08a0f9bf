"""Config errors name the key and where it came from; good values are coerced exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rlkit.config import ConfigError, load


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Cfg:
    optim: Optim = field(default_factory=Optim)
    name: str = "run"
    flags: list[str] = field(default_factory=list)
    seed: int | None = None


def test_yaml_and_overrides_fill_nested_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# rlkit run x --config c.yaml\noptim:\n  lr: 1.0e-5\nname: a\n")
    cfg = load(Cfg, path, ["optim.steps=3", "flags=[x, y]", "seed=7"])
    assert (cfg.optim.lr, cfg.optim.steps, cfg.name, cfg.flags, cfg.seed) == (1e-5, 3, "a", ["x", "y"], 7)


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")  # "lrr" is a typo of "lr"
    with pytest.raises(ConfigError) as err:
        load(Cfg, path)
    assert "optim.lrr" in str(err.value) and str(path) in str(err.value)
    assert "lr" in str(err.value)  # the valid keys are listed


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigError, match=r"unknown key 'nmae'.*command line|command line.*unknown key 'nmae'"):
        load(Cfg, None, ["nmae=x"])


@pytest.mark.parametrize("override, key", [
    ("optim.steps=2.5", "optim.steps"),  # a float is not an int
    ("optim.lr=fast", "optim.lr"),  # not a number
    ("name=[1, 2]", "name"),  # a list is not a string
    ("optim.steps=true", "optim.steps"),  # YAML true is a bool, not an int
])
def test_wrong_type_names_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load(Cfg, None, [override])


def test_int_is_accepted_for_float_and_yaml_exponent_string():
    # YAML 1.1 reads "1e-5" as a string; a float field still accepts it
    assert load(Cfg, None, ["optim.lr=1"]).optim.lr == 1.0
    assert load(Cfg, None, ["optim.lr=1e-5"]).optim.lr == 1e-5


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(Cfg, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(Cfg, bad)


def test_shipped_configs_load_and_start_with_launch_command():
    from pathlib import Path

    from rlkit.cli import load_recipe

    root = Path(__file__).resolve().parents[2]
    for yaml_path in sorted((root / "recipes" / "configs").glob("*.yaml")):
        first = yaml_path.read_text().splitlines()[0]
        assert first.startswith("# rlkit run "), f"{yaml_path.name} must start with its launch command"
        recipe = first.split()[3]
        module = load_recipe(recipe)
        load(module.Config, yaml_path)  # raises on any unknown key or wrong type
