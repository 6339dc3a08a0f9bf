"""Strict typed configs: dataclasses filled from YAML plus ``key=value`` overrides.

A recipe declares its config as a (nested) dataclass. ``load(Config, "x.yaml", ["a.b=3"])``
reads the YAML, applies the dotted overrides and builds the dataclass, checking every value
against its annotation. An unknown key or a wrong type is a ``ConfigError`` that names the key
and where it came from (the file, or the command line), so a typo never runs silently.

A field's documentation is the comment written beside it (or, for a long one, the comment lines
right above it); ``describe`` reads them from the source for ``rlkit run <recipe> --help``.
``config_file()`` is the file ``load`` read last: relative input paths are also looked up from
its folder (``rlkit.inputs``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config value that does not fit its dataclass: unknown key, wrong type, bad YAML."""


def load(cls: type, yaml_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Build ``cls`` from a YAML file and ``key=value`` overrides (dotted keys for nesting)."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if yaml_path is not None:
        path = Path(yaml_path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        raw = loaded
        _remember_config_file(path)
    origins: dict[str, str] = {}
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        origins[key] = "the command line"
    return _build(cls, raw, prefix="", source=source, origins=origins)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for saving next to checkpoints and logs)."""
    return dataclasses.asdict(cfg)


def save(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # a plain string that merely looks odd to YAML
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}=...: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, *, prefix: str, source: str, origins: dict[str, str]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(prefix.rstrip('.'), source, origins)}: expected a section (mapping), got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            full = prefix + str(key)
            raise ConfigError(
                f"{_where(full, source, origins)}: unknown key {full!r}; "
                f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, key=prefix + name, source=source, origins=origins)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field left out
        raise ConfigError(f"{source}: {cls.__name__}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            # a check across keys cannot tell which of them came from the command line: name the file only
            # when nothing did
            raise ConfigError(f"{e}" if origins else f"{source}: {e}") from None
    return obj


def _where(key: str, source: str, origins: dict[str, str]) -> str:
    """Where `key` was set: the command line when it or a section above it was overridden there."""
    parts = key.replace("[", ".[").split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end]).replace(".[", "[")
        if prefix in origins:
            return origins[prefix]
    return source


def _coerce(tp: Any, value: Any, *, key: str, source: str, origins: dict[str, str]) -> Any:
    where = _where(key, source, origins)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".", source=source, origins=origins)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(arm, value, key=key, source=source, origins=origins)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: key {key!r} expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: key {key!r} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: key {key!r} expects a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, key=f"{key}[{i}]", source=source, origins=origins) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: key {key!r} expects a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _coerce(val_tp, v, key=f"{key}.{k}", source=source, origins=origins) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: key {key!r} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: key {key!r} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: key {key!r} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: key {key!r} expects a string, got {value!r}")
    raise ConfigError(f"{where}: key {key!r} has an unsupported annotation {tp!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_choice(key: str, value: str, choices: typing.Iterable[str], kind: str) -> None:
    """A name looked up in a registry (or a fixed set) at run time, checked when the config is built."""
    choices = sorted(choices)
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not a known {kind}; choose one of: {', '.join(choices)}")


# ---------------------------------------------------------------------------------------
# Field documentation: the comments beside the fields, for `rlkit run <recipe> --help`.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class FieldHelp:
    key: str  # dotted key, e.g. "rollout.group_size"
    type: str  # as written for the user: int, str, bool, list[str], ddp | fsdp ...
    value: Any  # the default, or the value a loaded config gives it
    doc: str  # the field's comment, on one line ("" when it has none)


def describe(cfg_or_cls: Any, prefix: str = "") -> list[FieldHelp]:
    """Every leaf key of a (nested) config dataclass, in declaration order, with type, value and doc."""
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    instance = None if isinstance(cfg_or_cls, type) else cfg_or_cls
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[FieldHelp] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if instance is not None:
            value = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = dataclasses.MISSING
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += describe(value if dataclasses.is_dataclass(value) else tp, prefix=f"{prefix}{f.name}.")
        else:
            out.append(FieldHelp(prefix + f.name, user_type_name(tp), value, docs.get(f.name, "")))
    return out


def user_type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else user_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else user_type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its comment, for a dataclass and the dataclasses it inherits from."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_comments(klass))
    return docs


@functools.lru_cache(maxsize=None)
def _own_field_comments(klass: type) -> dict[str, str]:
    """Comments of the fields a class body declares: the comment on the field's line(s), else the comment
    block directly above it. Read with `tokenize`, so a '#' inside a string is never taken for one."""
    try:
        lines, _ = inspect.getsourcelines(klass)
    except (OSError, TypeError):  # defined in a REPL or built dynamically: no docs, not an error
        return {}
    source = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError):
        return {}
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    code_lines = {t.start[0] for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                                                tokenize.INDENT, tokenize.DEDENT)}
    out: dict[str, str] = {}
    for node in tree.body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        if beside:
            out[node.target.id] = " ".join(beside)
            continue
        above, n = [], node.lineno - 1
        while n in comments and n not in code_lines:  # a block of whole-line comments
            above.insert(0, comments[n])
            n -= 1
        if above:
            out[node.target.id] = " ".join(above)
    return out


_config_file: Path | None = None  # the YAML file `load` read last (one per run): relative inputs are looked up from it


def _remember_config_file(path: Path) -> None:
    global _config_file
    _config_file = path.resolve()


def config_file() -> Path | None:
    """The config file `load` read last, if any (see `rlkit.inputs.search_dirs`)."""
    return _config_file


# ---------------------------------------------------------------------------------------
# Shared sections. A recipe's Config nests the ones it needs; each field's comment is its doc.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    path: str = "data/models/tiny-moe"  # local HF directory or Hub id
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False  # run modeling code shipped with the model (needed by some DeepSeek/Kimi repos)


@dataclasses.dataclass
class DataConfig:
    # JSONL/JSON/parquet/arrow file, a datasets folder (save_to_disk or a repo), or a Hub id written
    # name[:subset]:split, e.g. openai/gsm8k:main:train
    train: str = "data/tiny_math/train.jsonl"
    # held-out set for eval/accuracy, written as train; with no split given it reads test ("" = no eval)
    test: str = "data/tiny_math/test.jsonl"
    prompt_column: str = "prompt"  # the column holding the question
    answer_column: str = "answer"  # the gold answer; rewards receive it as `answer`
    # r1_zero | plain | chat (the tokenizer's chat template) | chat:<format> | a format string with {prompt}
    template: str = "r1_zero"
    system_prompt: str = ""  # chat: a system message before the question ("" = none)
    # chat: open the reply with <think> (auto: where the chat template is a reasoning model's)
    think: Literal["auto", "always", "never"] = "auto"
    max_test_examples: int = 0  # 0 = the whole test split


@dataclasses.dataclass
class RolloutConfig:
    engine: str = "hf"  # a name in rlkit.rollout.engine.ENGINES
    num_actors: int = 1  # Ray rollout actors, each with its own engine
    device: str = "cpu"  # cpu | cuda
    group_size: int = 8  # G samples per prompt
    prompts_per_step: int = 8  # B prompts per step; the batch is B*G samples
    max_new_tokens: int = 96  # cap on each completion, in tokens
    temperature: float = 1.0  # sampling temperature of the training rollouts
    top_p: float = 1.0  # nucleus sampling: keep the smallest token set with this much probability (1 = off)
    eval_temperature: float = 1.0  # 0 = greedy
    eval_samples: int = 1  # k samples per held-out problem: eval/accuracy is avg@k
    repeat_ngram: int = 0  # stop a sample whose last repeat_window tokens repeat one n-gram (0 = off)
    repeat_window: int = 0  # tokens the repeat check looks back over (with repeat_ngram)
    record_routes: bool = False  # MoE: record each token's experts (on with algo.routing_replay; gives moe/route_mismatch)
    dtype: str = ""  # the engine's weights: float32 | bfloat16 | float16 ("" = model.dtype)
    tensor_parallel_size: int = 1  # vllm: GPUs per engine (each rollout actor takes this many)
    memory_share: float = 0.0  # vllm: share of GPU memory (weights + KV; cuda) or RAM (KV; cpu), 0 = 0.5 / 0.04
    max_model_len: int = 0  # vllm: longest prompt + completion an engine holds (0 = the model's context)


@dataclasses.dataclass
class RewardModelConfig:
    kind: str = "classifier"  # classifier (a reward model: its logit) | judge (a causal LM asked for a verdict)
    path: str = ""  # local HF directory: *ForSequenceClassification with one label, or a *ForCausalLM judge
    device: str = "cpu"  # cpu | cuda (the actor then takes one GPU)
    batch_size: int = 16  # classifier: sequences per forward
    max_length: int = 1024  # classifier: tokens of prompt + completion; the prompt is cut from the left
    normalize: bool = False  # classifier: standardise the scores over each scored batch (mean 0, std 1)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    num_cpus: float = 0.0  # Ray CPUs reserved for the actor (0: it shares the cores with the others)
    threads: int = 1  # torch CPU threads in the actor
    engine: str = "hf"  # judge: the rollout engine it answers through (hf | vllm)
    template: str = ""  # judge: prompt with {prompt}, {completion}, {answer}; "" = rewards.judge.DEFAULT_TEMPLATE
    verdicts: dict[str, float] = dataclasses.field(default_factory=lambda: {"yes": 1.0, "no": 0.0})  # judge
    max_new_tokens: int = 8  # judge: tokens of its answer (greedy); the first verdict word in it scores

    def validate(self) -> None:
        if self.kind not in ("classifier", "judge"):
            raise ValueError(f"reward model kind must be classifier or judge, got {self.kind!r}")
        if not self.path:
            raise ValueError("reward.models.<name>.path is empty: give the reward model's directory")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"reward model device must be cpu or cuda, got {self.device!r}")
        if self.batch_size < 1 or self.max_length < 1 or self.max_new_tokens < 1:
            raise ValueError("reward model batch_size, max_length and max_new_tokens must be >= 1")
        if self.kind == "judge" and not self.verdicts:
            raise ValueError("a judge's verdicts is empty: give the words it answers with and their scores")


@dataclasses.dataclass
class RewardConfig:
    # reward name (rewards.get), path/to/file.py:function, or a name from `models` -> weight
    weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"math_accuracy": 1.0, "think_format": 1.0}
    )
    accuracy: str = "math_accuracy"  # the reward whose mean is reported as accuracy (eval and train)
    # reward models, by the name `weights` gives them: {name: {path: ..., device: ..., normalize: ...}};
    # each runs in its own Ray actor (rewards.model)
    models: dict[str, RewardModelConfig] = dataclasses.field(default_factory=dict)
    # score a round's first chunks of groups while the rest are generated (1 = generate, then score);
    # pays off when scoring is slow (sandboxed code) and generation has several actors or a GPU
    overlap_chunks: int = 1

    def validate(self) -> None:
        for name in self.models:
            if name not in self.weights:
                raise ValueError(f"reward.models.{name} is not used: add it to reward.weights with a weight")
        if self.overlap_chunks < 1:
            raise ValueError(f"reward.overlap_chunks must be >= 1, got {self.overlap_chunks}")


@dataclasses.dataclass
class AlgoConfig:
    advantage: str = "grpo"  # grpo | dr_grpo | rloo
    clip_low: float = 0.2  # PPO ratio clip below: 1 - clip_low
    clip_high: float = 0.2  # PPO ratio clip above: 1 + clip_high (DAPO clip-higher: 0.28)
    aggregation: str = "token_mean"  # token_mean | seq_mean | seq_sum_const
    level: str = "token"  # token | sequence (GSPO)
    kl_coef: float = 0.0  # beta; > 0 keeps a frozen reference model on the learner
    kl_kind: str = "k3"  # KL estimator: k1 | k2 | k3
    entropy_coef: float = 0.0  # entropy bonus weight (0 = off)
    router_aux_coef: float = 0.001  # MoE load-balancing loss coefficient (0 = off)
    # MoE (rlkit.moe). The aux coefficient above is the Switch-style loss of softmax routers (Qwen3-MoE, Mixtral);
    # routers with a routing bias (DeepSeek-V3) use the two below instead
    seq_balance_coef: float = 0.0  # DeepSeek-V3 sequence-wise balance loss weight (V3: 0.0001; 0 = off)
    bias_balance_speed: float = 0.0  # aux-loss-free balancing: bias step per optimizer step (V3: 0.001; 0 = off)
    routing_replay: bool = False  # the learner routes every token to the experts the rollout engine used
    # reference for kl_coef > 0: 0 = the frozen initial policy; k = the policy as of every k-th step
    # (k1.5's mirror-descent term is kl_kind=k2 with kl_coef=tau against the latest iterate)
    ref_refresh_every: int = 0


@dataclasses.dataclass
class LearnerConfig:
    num_learners: int = 1  # Ray learner actors (ranks)
    strategy: Literal["ddp", "fsdp"] = "ddp"  # ranks replicate the model (ddp) or shard it (fsdp, FSDP2)
    device: str = "cpu"  # cpu | cuda
    lr: float = 1e-5  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    micro_batch_size: int = 16  # sequences per forward/backward; the loss is normalised over the whole batch
    max_grad_norm: float = 1.0  # gradient clipping by global norm
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    threads: int = 1  # torch CPU threads per learner actor
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, about 1/3 more compute
    offload_optimizer: bool = False  # keep optimizer state in CPU memory between steps (frees GPU memory for rollouts)
    logit_chunk_tokens: int = 1024  # tokens per output-projection chunk: the [chunk, vocab] logits are the peak
    log_entropy: bool = True  # report actor/entropy even when entropy_coef = 0 (one more pass over the vocab)
    forward: Literal["auto", "tree", "shared_prefix", "plain", "full"] = "auto"  # auto (fastest verified) | tree | shared_prefix | plain | full (the model's own forward)


@dataclasses.dataclass
class PlacementConfig:
    # GPU runs: rollout engines share each GPU with a learner rank (true), or have GPUs of their own (false)
    colocate: bool = True
    rollout_gpu_share: float = 0.5  # colocated: the fraction of each GPU reserved for its rollout engine
    timeout_s: float = 120.0  # actors the cluster has not placed after this long are an error, not a wait


@dataclasses.dataclass
class TrainConfig:
    output_dir: str = "runs/r1_zero"  # where this run writes; a folder holding another run is refused
    steps: int = 100  # optimizer steps (one batch of prompts each)
    seed: int = 0  # seeds sampling, prompt order and initialisation
    eval_every: int = 10  # also at step 0 and at the end
    save_every: int = 20  # checkpoint every this many steps (and at the end); the last two are kept
    resume: bool = False  # continue from the newest checkpoint in output_dir
    log_every: int = 1  # write a metrics.jsonl row every this many steps
    ray_address: str = ""  # "" starts a local Ray; "auto" or ray://host:port joins a cluster
    tensorboard: bool = True  # also write the metrics as TensorBoard events (output_dir/tensorboard)
    report: bool = True  # write report.png at the end


@dataclasses.dataclass
class ShapingConfig:
    kimi_length_coef: float = 0.0  # weight of the Kimi k1.5 length reward (0 = off)
    kimi_length_warmup: int = 0  # steps trained without it first
    overlong_buffer: int = 0  # DAPO soft overlong punishment: L_cache tokens (0 = off)
    overlong_max: int = 0  # its L_max (0 = rollout.max_new_tokens)
    overlong_coef: float = 1.0  # scale of the overlong punishment
    overlong_filter: bool = False  # mask truncated samples out of the loss
    repeat_penalty: float = 0.0  # added to the reward of samples stopped as repetitions (e.g. -0.5)


@dataclasses.dataclass
class SamplingConfig:
    prompt_order: str = "shuffle"  # shuffle | in_order | prioritized (k1.5) | curriculum (k1.5)
    difficulty_column: str = "difficulty"  # for curriculum
    dynamic: bool = False  # DAPO: drop groups with equal rewards, refill until the batch is full
    max_rounds: int = 4  # generation rounds per step for dynamic sampling (then train on what there is)


@dataclasses.dataclass
class PartialConfig:
    enabled: bool = False  # Kimi k1.5 partial rollouts
    token_budget: int = 32  # new tokens per trajectory per iteration
    max_staleness: int = 4  # versions behind before an unfinished trajectory is restarted
    stale_mode: str = "mask"  # mask | importance: how tokens from older policies enter the loss
    is_cap: float = 2.0  # truncation cap of the importance weights
    groups_in_flight: int = 0  # groups being generated at once (0 = rollout.prompts_per_step)
