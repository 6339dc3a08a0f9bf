"""Verifiers for RL post-training and the contract they share.

A reward function scores a batch of completions (TRL-compatible, so existing
TRL reward functions plug in unchanged)::

    def my_reward(completions: list[str], **columns) -> list[float | None]

``columns`` carries every dataset column of the batch (``answer``, ``tests``,
...) plus ``prompts``, one entry per completion. Completions are strings or
chat lists ``[{"role": "assistant", "content": "..."}]``;
:func:`completion_text` reads either. Return one value per completion;
``None`` means "this reward does not apply to this sample" and is left out of
the combined reward, never read as 0.0 or 1.0.

Example::

    import rewards

    @rewards.register("short_answer")
    def short_answer(completions, answer, **columns):
        return [None if a is None else float(len(rewards.completion_text(c)) < 200)
                for c, a in zip(completions, answer)]

    reward = rewards.combine({"math_accuracy": 1.0, "think_format": 1.0, "short_answer": 0.5})
    scores = reward.score(completions, answer=answers, prompts=prompts)
    scores.total            # one float (or None) per completion: the training signal
    scores.per_reward       # {"math_accuracy": [...], ...}: for metrics

A config names rewards the same way ``rewards.get`` reads them: a registered
name (``rewards.available()``), ``path/to/file.py:function`` or
``package.module:function``. Built-ins: ``think_format``, ``tag_count``,
``repetition``, ``language_consistency`` (``rewards.format``),
``math_accuracy`` (``rewards.math``), ``code_unit_tests`` (``rewards.code``).
They are imported on first use, so ``import rewards`` stays light.

A learned reward model is one more reward function: ``rewards.model.reward_model(path)``
scores ``prompt + completion`` with a local sequence-classification model in a Ray actor
(the caller never loads the weights). A training config names it in ``reward.weights`` and
gives its path under ``reward.models`` (see :mod:`rewards.model`).
"""

from rewards._text import completion_text
from rewards.combine import CombinedReward, CombinedScores, RewardError, combine
from rewards.registry import RewardRegistry, available, get, register

__all__ = [
    "CombinedReward",
    "CombinedScores",
    "RewardError",
    "RewardRegistry",
    "available",
    "combine",
    "completion_text",
    "get",
    "register",
]
