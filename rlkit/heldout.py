"""Held-out accuracy and mean response length of a checkpoint, through the rollout engines.

The figures every SFT-side recipe reports (`accuracy`, `mean_length`) are measured the way the
R1-Zero recipe measures `eval/accuracy`: the same engines (Ray rollout actors, `hf` or any
registered engine), the same reward, the same sampling (avg@k at the configured temperature,
seeded), so numbers from different recipes compare.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlkit.data import Problem, build_problems, load_rows
from rlkit.types import SamplingParams


@dataclass
class EvalConfig:
    test: str = "data/tiny_math/test.jsonl"  # held-out set ("" = no evaluation)
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    template: str = "r1_zero"
    max_test_examples: int = 0  # 0 = all
    samples: int = 1  # k samples per problem: accuracy is avg@k
    temperature: float = 1.0  # 0 = greedy
    max_new_tokens: int = 96
    accuracy: str = "math_accuracy"  # reward name or file.py:function
    engine: str = "hf"  # a name in rlkit.rollout.engine.ENGINES
    num_actors: int = 1
    device: str = "cpu"


def load_heldout(cfg: EvalConfig, tokenizer) -> list[Problem]:
    """The held-out problems, templated; checked before any actor starts."""
    if not cfg.test:
        return []
    rows = load_rows(cfg.test, required=[cfg.prompt_column, cfg.answer_column], default_split="test")
    if cfg.max_test_examples:
        rows = rows[: cfg.max_test_examples]
    return build_problems(rows, tokenizer, prompt_column=cfg.prompt_column, template=cfg.template, source=cfg.test,
                          answer_column=cfg.answer_column)


def evaluate_model(model_path: str, problems: list[Problem], cfg: EvalConfig, *, seed: int = 0,
                   dtype: str = "float32") -> dict[str, float]:
    """{"accuracy", "mean_length", "pass@k", "truncated"} of `model_path` on `problems` (Ray must be up)."""
    import ray

    from rlkit.actors import RolloutGroup
    from rlkit.config import ModelConfig, RolloutConfig
    from rlkit.evaluation import evaluate
    from rlkit.rollout.engine import engine_setup

    if not problems:
        return {}
    engine = engine_setup(RolloutConfig(engine=cfg.engine, num_actors=cfg.num_actors, device=cfg.device),
                          ModelConfig(path=model_path, dtype=dtype), seed=seed)
    group = RolloutGroup(cfg.num_actors, engine.name, engine.kwargs, num_gpus=engine.num_gpus)
    try:
        sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed)
        metrics = evaluate(group.generate, problems, accuracy=cfg.accuracy, sampling=sampling, k=cfg.samples)
    finally:
        for actor in group.actors:
            ray.kill(actor)
    return {"accuracy": metrics["eval/accuracy"], "mean_length": metrics["eval/response_length"],
            f"pass@{cfg.samples}": metrics[f"eval/pass@{cfg.samples}"], "truncated": metrics["eval/truncated"]}


def accuracy_change(before: dict, after: dict) -> str:
    """Held-out accuracy for the console: 'a -> b', only 'b' without a before, 'not measured' without either."""
    figures = [f"{d['accuracy']:.3f}" for d in (before, after) if d]
    return " -> ".join(figures) or "not measured"
