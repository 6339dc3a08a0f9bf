"""`rlkit` command line.

    rlkit run <recipe> --config X.yaml [key=value ...]   run recipes/<recipe>.py
    rlkit run <recipe> --help                             its config keys: type, default, what each does
    rlkit recipes                                         the recipes and their configs
    rlkit rewards                                         the reward names a config can use
    rlkit eval --model DIR --data FILE [--k 4]           score a checkpoint on a dataset
    rlkit --version                                       versions of rlkit and what it runs on

`rlkit run` options: --overwrite (replace the run already in output_dir), --debug (full
tracebacks and third-party logs). A failure prints one line: what is wrong and how to fix it.

A recipe is a script in recipes/ that defines a dataclass `Config` and `main(cfg)`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from rlkit.config import ConfigError, describe, load

RUN_OPTIONS = """options:
  --config FILE   YAML file (sections nested); key=value overrides follow it, dotted for sections
  --overwrite     delete the outputs of the run already in output_dir and start a new one there
  --debug         full tracebacks and third-party logs (progress bars of every process, warnings)"""


class RunInterrupted(Exception):
    """Ctrl-C: the run stopped; the message says where it can continue from."""


# ----------------------------------------------------------------------------- recipes
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


def recipe_configs() -> dict[str, list[Path]]:
    """Recipe name -> the shipped configs that launch it (their first line is `# rlkit run <recipe> ...`)."""
    out: dict[str, list[Path]] = {}
    for d in recipe_dirs():
        for path in sorted((d / "configs").glob("*.yaml")):
            with path.open() as f:
                first = f.readline().split()
            if first[:3] == ["#", "rlkit", "run"] and len(first) > 3:
                out.setdefault(first[3], []).append(path)
    return out


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


# ----------------------------------------------------------------------------- running one
def run_recipe(config_cls: type, main: Callable[[Any], Any], config_path: str | None, overrides: list[str], *,
               recipe: str | None = None, overwrite: bool = False, command: list[str] | None = None) -> Any:
    """Load the config, claim its output_dir (`rlkit.run`), run `main(cfg)` and record how it ended.

    A stopped run (Ctrl-C, a failure after its first checkpoint) is told how to continue."""
    from rlkit.run import claim_output_dir, continue_hint, inspect_dir

    recipe = recipe or _recipe_name(main)
    command = command or ["rlkit", "run", recipe, *(["--config", config_path] if config_path else []), *overrides]
    try:
        cfg = load(config_cls, config_path, overrides)
    except ConfigError as e:
        raise SystemExit(f"rlkit: config error: {e}") from None
    output_dir = getattr(cfg, "output_dir", None)
    resume = getattr(cfg, "resume", None)
    claim = None
    if output_dir:
        claim = claim_output_dir(output_dir, recipe=recipe, resume=resume, overwrite=overwrite, command=command,
                                 resume_requested=bool(resume) and _field_default(config_cls, "resume") is False)
    started = time.monotonic()
    try:
        result = main(cfg)
    except KeyboardInterrupt:
        _stop_quietly()
        if claim is None:
            raise RunInterrupted("interrupted") from None
        claim.finish("interrupted", wall_time_s=round(time.monotonic() - started, 1))
        raise RunInterrupted(f"interrupted; {continue_hint(output_dir, command, resume=resume)}") from None
    except BaseException as err:
        if claim is not None:
            claim.finish("failed", error=_one_line(err))
            saved = inspect_dir(output_dir)
            if not isinstance(err, SystemExit) and (saved.checkpoint is not None or saved.stages):
                err.rlkit_hint = continue_hint(output_dir, command, resume=resume)
        raise
    if claim is not None:
        claim.finish("finished", wall_time_s=round(time.monotonic() - started, 1))
    return result


def run_recipe_from_argv(config_cls: type, main: Callable[[Any], Any], argv: list[str] | None = None) -> Any:
    """`python recipes/x.py --config X.yaml key=value ...`: the same as `rlkit run x ...`."""
    module = sys.modules.get(main.__module__)
    name = Path(getattr(module, "__file__", "") or "recipe").stem
    _main(["run", name, *(sys.argv[1:] if argv is None else argv)], module=module)


def _recipe_name(main: Callable) -> str:
    module = sys.modules.get(main.__module__)
    return Path(getattr(module, "__file__", "") or main.__module__).stem


def _field_default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    return None


def _stop_quietly() -> None:
    """After Ctrl-C: a second one must not turn the shutdown into tracebacks; Ray's actors are stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# ----------------------------------------------------------------------------- listings and help
def _help_text() -> str:
    lines = [__doc__.strip(), "", "recipes:"]
    for name, first in list_recipes().items():
        lines.append(f"  {name:<24} {first}")
    return "\n".join(lines)


def recipes_text() -> str:
    configs = recipe_configs()
    lines = ["recipes (rlkit run <recipe> --config <config> [key=value ...]; rlkit run <recipe> --help for its keys):"]
    for name, first in list_recipes().items():
        lines.append(f"  {name:<20} {first}")
        if configs.get(name):
            lines.append(f"  {'':<20} configs: {', '.join(_short(p) for p in configs[name])}")
    return "\n".join(lines)


def rewards_text() -> str:
    import rewards

    lines = ["rewards (reward.weights: {name: weight, ...}; reward.accuracy: name):"]
    for name in rewards.available():
        try:
            doc = (rewards.get(name).__doc__ or "").strip()
        except Exception as err:  # a reward whose dependency is missing is listed with the reason
            doc = f"(unavailable here: {_one_line(err)})"
        first = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"  {name:<22} {first}")
    lines += ["", "Your own: path/to/file.py:function or package.module:function (TRL's contract: "
              "fn(completions, **columns) -> list[float | None]); reward models and judges: reward.models (see rewards.model, rewards.judge)."]
    return "\n".join(lines)


def recipe_help(name: str, module: Any, config_path: str | None, overrides: list[str]) -> str:
    doc = (module.__doc__ or "").strip()
    configs = recipe_configs().get(name, [])
    launch = [line.strip() for line in doc.splitlines() if line.strip().startswith("rlkit run ")]
    lines = [f"rlkit run {name}: {doc.splitlines()[0] if doc else ''}", "",
             f"usage: rlkit run {name} [--config FILE.yaml] [key=value ...] [--overwrite] [--debug]"]
    if launch:
        lines.append(f"e.g.:  {launch[0]}")
    if configs:
        lines.append(f"configs: {', '.join(_short(p) for p in configs)}")
    lines += ["", RUN_OPTIONS, ""]
    if config_path or overrides:
        cfg = load(module.Config, config_path, overrides)
        lines.append(f"keys (type, value from {' '.join(filter(None, [config_path, *overrides]))}, what it does):")
        fields = describe(cfg)
    else:
        lines.append("keys (type, default, what it does):")
        fields = describe(module.Config)
    width = max(len(f.key) for f in fields) + 2
    for f in fields:
        value = "(required)" if f.value is dataclasses.MISSING else _yaml_value(f.value)
        lines.append(f"  {f.key:<{width}}{f.type:<14} {value:<20} {f.doc}".rstrip())
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    if value == "":
        return '""'
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def version_text() -> str:
    import rlkit

    parts = []
    for dist in ("torch", "transformers", "ray", "vllm", "accelerate", "datasets"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"rlkit {rlkit.__version__} ({', '.join(parts)}; Python {sys.version.split()[0]})"


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> dict[str, float]:
    from rlkit.logging import quiet_console

    quiet_console()  # before transformers is imported: it reads the settings once
    import torch

    from rlkit.data import build_problems, load_rows
    from rlkit.evaluation import evaluate
    from rlkit.inputs import resolve_input
    from rlkit.rollout.engine import make_engine
    from rlkit.types import SamplingParams

    torch.set_num_threads(args.threads)
    model = resolve_input(args.model, key="--model")
    rows = load_rows(args.data, required=[args.prompt_column, args.answer_column], default_split="test")
    engine = make_engine(args.engine, model_path=model, device=args.device, seed=args.seed)
    if args.limit:
        rows = rows[: args.limit]
    problems = build_problems(rows, engine.tokenizer, prompt_column=args.prompt_column, template=args.template,
                              source=args.data, answer_column=args.answer_column, system_prompt=args.system_prompt,
                              think=args.think)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    metrics = evaluate(engine.generate, problems, accuracy=args.reward, sampling=sampling, k=args.k)
    metrics = {k.replace("eval/", ""): v for k, v in metrics.items()}
    metrics[f"avg@{args.k}"] = metrics["accuracy"]
    print(json.dumps(metrics, indent=2))
    return metrics


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlkit eval", description="Score a checkpoint on a dataset.")
    parser.add_argument("--model", required=True, help="HF-format directory (a checkpoint) or Hub id")
    parser.add_argument("--data", required=True, help="file, datasets folder or Hub id[:subset][:split] (split: test)")
    parser.add_argument("--k", type=int, default=1, help="samples per problem: accuracy is avg@k")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--template", default="r1_zero", help="r1_zero | plain | chat | a format string")
    parser.add_argument("--system-prompt", default="", help="with --template chat")
    parser.add_argument("--think", default="auto", choices=["auto", "always", "never"], help="with --template chat")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--answer-column", default="answer")
    parser.add_argument("--reward", default="math_accuracy", help="reward name or file.py:function")
    parser.add_argument("--engine", default="hf")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser


# ----------------------------------------------------------------------------- entry point
def cmd_run(rest: list[str], module: Any = None) -> None:
    parser = argparse.ArgumentParser(prog="rlkit run", add_help=False)
    parser.add_argument("recipe")
    parser.add_argument("--config", default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    args, overrides = parser.parse_known_args(rest)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"rlkit run: unexpected argument(s) {bad}; overrides are key=value "
                         f"(rlkit run {args.recipe} --help lists the keys)")
    if not args.debug:
        from rlkit.logging import quiet_console

        quiet_console()
    module = module or load_recipe(args.recipe)
    if args.help:
        try:
            print(recipe_help(args.recipe, module, args.config, overrides))
        except ConfigError as e:
            raise SystemExit(f"rlkit: config error: {e}") from None
        return
    command = ["rlkit", "run", args.recipe, *(["--config", args.config] if args.config else []), *overrides]
    run_recipe(module.Config, module.main, args.config, overrides, recipe=args.recipe, overwrite=args.overwrite,
               command=command)


def main(argv: list[str] | None = None) -> None:
    _main(sys.argv[1:] if argv is None else argv)


def _main(argv: list[str], module: Any = None) -> None:
    debug = "--debug" in argv
    try:
        _dispatch(argv, module)
    except RunInterrupted as stop:
        print(f"rlkit: {stop}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:  # before a run started (loading the recipe, its imports)
        print("rlkit: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `rlkit ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except Exception as err:
        if debug:
            raise
        hint = getattr(err, "rlkit_hint", "")
        print(f"rlkit: error: {error_message(err)}{'; ' + hint if hint else ''}", file=sys.stderr)
        raise SystemExit(1) from None


def _dispatch(argv: list[str], module: Any) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text())
        return
    command, rest = argv[0], argv[1:]
    if command in ("--version", "-V", "version"):
        print(version_text())
    elif command == "run":
        cmd_run(rest, module)
    elif command == "recipes":
        print(recipes_text())
    elif command == "rewards":
        print(rewards_text())
    elif command == "eval":
        cmd_eval(_eval_parser().parse_args(rest))
    else:
        raise SystemExit(f"unknown command {command!r}\n\n{_help_text()}")


# Errors that describe bad input: their message alone says what to fix. Anything else is shown with its
# type, as it may be a bug (--debug gives the traceback).
_INPUT_ERRORS = ("ConfigError", "OutputDirError", "FileNotFoundError", "ValueError", "KeyError", "PlacementError",
                 "LearnerDied", "UnknownRewardError", "EngineUnavailable", "ConnectionError", "StageConfigChanged",
                 "SFTDataError", "RewardError", "ImportError", "ModuleNotFoundError", "NotADirectoryError",
                 "IsADirectoryError", "PermissionError", "TimeoutError", "GetTimeoutError")


def error_message(err: BaseException) -> str:
    """One line for the user: the message of the error (the cause of one raised in a Ray actor)."""
    cause = getattr(err, "cause", None)  # ray.exceptions.RayTaskError carries the actor's exception
    if type(err).__name__.startswith("RayTaskError") and isinstance(cause, BaseException):
        return error_message(cause)
    text = _one_line(err)
    known = any(c.__name__ in _INPUT_ERRORS for c in type(err).__mro__)
    return text if known else f"{type(err).__name__}: {text} (--debug shows the traceback)"


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0] + (f" (+{len(lines) - 1} more lines with --debug)" if len(lines) > 1 else "")


if __name__ == "__main__":
    main()
