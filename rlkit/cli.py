"""`rlkit` command line.

    rlkit run <recipe> --config X.yaml [key=value ...]   run recipes/<recipe>.py
    rlkit eval --model DIR --data FILE [--k 4]           score a checkpoint on a dataset
    rlkit --help                                          this text and the recipes found

A recipe is a script in recipes/ that defines a dataclass `Config` and `main(cfg)`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rlkit.config import ConfigError, load


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ./recipes first, then the recipes/ beside this checkout."""
    dirs = [Path.cwd() / "recipes", Path(__file__).resolve().parent.parent / "recipes"]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def list_recipes() -> dict[str, str]:
    """Recipe name -> first line of its docstring (read without importing it)."""
    found: dict[str, str] = {}
    for d in recipe_dirs():
        for path in sorted(d.glob("*.py")):
            if path.stem.startswith("_") or path.stem in found:
                continue
            try:
                doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            except SyntaxError:
                doc = "(does not parse)"
            found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def load_recipe(name: str):
    for d in recipe_dirs():
        path = d / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"rlkit_recipe_{name}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while decorating
            spec.loader.exec_module(module)
            for attr in ("Config", "main"):
                if not hasattr(module, attr):
                    raise SystemExit(f"recipe {path} defines no `{attr}`")
            return module
    known = ", ".join(list_recipes()) or "(none found)"
    raise SystemExit(f"unknown recipe {name!r}; recipes: {known} (looked in {[str(d) for d in recipe_dirs()]})")


def run_recipe(config_cls: type, main: Callable[[Any], Any], config_path: str | None, overrides: list[str]) -> Any:
    try:
        cfg = load(config_cls, config_path, overrides)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    return main(cfg)


def run_recipe_from_argv(config_cls: type, main: Callable[[Any], Any], argv: list[str] | None = None) -> Any:
    """`python recipes/x.py --config X.yaml key=value ...`: the same as `rlkit run x ...`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    args, overrides = parser.parse_known_args(argv)
    return run_recipe(config_cls, main, args.config, overrides)


def _help_text() -> str:
    lines = [__doc__.strip(), "", "recipes:"]
    for name, first in list_recipes().items():
        lines.append(f"  {name:<24} {first}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from rlkit.data import build_problems, load_rows
    from rlkit.evaluation import evaluate
    from rlkit.rollout.engine import make_engine
    from rlkit.types import SamplingParams

    torch.set_num_threads(args.threads)
    engine = make_engine(args.engine, model_path=args.model, device=args.device, seed=args.seed)
    rows = load_rows(args.data, required=[args.prompt_column, args.answer_column])
    if args.limit:
        rows = rows[: args.limit]
    problems = build_problems(rows, engine.tokenizer, prompt_column=args.prompt_column, template=args.template,
                              source=args.data, answer_column=args.answer_column)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    metrics = evaluate(engine.generate, problems, accuracy=args.reward, sampling=sampling, k=args.k)
    metrics = {k.replace("eval/", ""): v for k, v in metrics.items()}
    metrics[f"avg@{args.k}"] = metrics["accuracy"]
    print(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text())
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        parser = argparse.ArgumentParser(prog="rlkit run")
        parser.add_argument("recipe")
        parser.add_argument("--config", default=None, help="YAML file; key=value overrides follow")
        args, overrides = parser.parse_known_args(rest)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise SystemExit(f"rlkit run: unexpected argument(s) {bad}; overrides are key=value")
        module = load_recipe(args.recipe)
        run_recipe(module.Config, module.main, args.config, overrides)
    elif command == "eval":
        parser = argparse.ArgumentParser(prog="rlkit eval", description="Score a checkpoint on a dataset.")
        parser.add_argument("--model", required=True, help="HF-format directory (a checkpoint) or Hub id")
        parser.add_argument("--data", required=True, help="JSONL/parquet file or Hub dataset id")
        parser.add_argument("--k", type=int, default=1, help="samples per problem: accuracy is avg@k")
        parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
        parser.add_argument("--max-new-tokens", type=int, default=96)
        parser.add_argument("--template", default="r1_zero")
        parser.add_argument("--prompt-column", default="prompt")
        parser.add_argument("--answer-column", default="answer")
        parser.add_argument("--reward", default="math_accuracy", help="reward name or file.py:function")
        parser.add_argument("--engine", default="hf")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--limit", type=int, default=0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--threads", type=int, default=2)
        cmd_eval(parser.parse_args(rest))
    else:
        raise SystemExit(f"unknown command {command!r}\n\n{_help_text()}")


if __name__ == "__main__":
    main()
