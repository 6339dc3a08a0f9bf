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
"""

from rewards._text import completion_text

__all__ = ["completion_text"]
