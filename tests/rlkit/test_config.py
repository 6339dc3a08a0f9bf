"""Config errors name the key and where it came from; good values are coerced exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rlkit.config import ConfigError, describe, field_docs, load


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


# ----------------------------------------------------------------------------- field docs (rlkit run <recipe> --help)
@dataclass
class Documented:
    plain: int = 1  # beside the field
    # above the field,
    # over two lines
    above: dict[str, float] = field(
        default_factory=lambda: {"a": 1.0}
    )
    hashed: str = "#not-a-comment"  # the '#' in the default is part of the string
    bare: float = 0.5
    choice: Literal["x", "y"] = "x"  # x or y


@dataclass
class Child(Documented):
    extra: int | None = None  # declared by the subclass
    nested: Optim = field(default_factory=Optim)


def test_field_docs_read_the_comments_beside_or_above_each_field():
    docs = field_docs(Child)
    assert docs["plain"] == "beside the field"
    assert docs["above"] == "above the field, over two lines"
    assert docs["hashed"] == "the '#' in the default is part of the string"
    assert "bare" not in docs  # no comment: no doc, not the neighbour's
    assert docs["extra"] == "declared by the subclass" and docs["choice"] == "x or y"  # inherited and own fields


def test_describe_lists_every_leaf_key_with_type_value_and_doc():
    rows = {h.key: h for h in describe(Child)}
    assert list(rows) == ["plain", "above", "hashed", "bare", "choice", "extra", "nested.lr", "nested.steps"]
    assert (rows["above"].type, rows["above"].value) == ("dict[str, float]", {"a": 1.0})
    assert (rows["choice"].type, rows["extra"].type, rows["hashed"].value) == ("x | y", "int | null", "#not-a-comment")
    loaded = {h.key: h.value for h in describe(load(Child, None, ["nested.steps=3"]))}
    assert loaded["nested.steps"] == 3  # values of a loaded config, not the defaults


def test_every_key_of_the_r1_zero_recipe_is_documented():
    from rlkit.cli import load_recipe

    undocumented = [h.key for h in describe(load_recipe("r1_zero").Config) if not h.doc]
    assert not undocumented, f"add a comment beside these fields (it is their --help text): {undocumented}"


def test_a_cross_key_check_names_the_file_only_when_nothing_came_from_the_command_line(tmp_path):
    @dataclass
    class Checked:
        low: int = 1
        high: int = 2

        def validate(self):
            if self.low > self.high:
                raise ValueError(f"low={self.low} > high={self.high}")

    path = tmp_path / "c.yaml"
    path.write_text("low: 5\n")
    with pytest.raises(ConfigError, match=rf"^{path}: low=5 > high=2$"):
        load(Checked, path)
    with pytest.raises(ConfigError, match=r"^low=1 > high=0$"):  # the command line set one of them
        load(Checked, None, ["high=0"])


def test_a_bad_value_inside_a_section_set_on_the_command_line_is_blamed_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\n")
    with pytest.raises(ConfigError, match=r"^the command line: key 'flags\[1\]' expects a string"):
        load(Cfg, path, ["flags=[x, 2]"])
    with pytest.raises(ConfigError, match=r"^the command line: key 'optim.lr' expects a number"):
        load(Cfg, path, ["optim={lr: fast}"])
