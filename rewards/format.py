"""Rewards on the shape of a completion rather than its correctness.

The R1 format is ``<think> reasoning </think> <answer> answer </answer>``.
Completions start right after the prompt's "Assistant:", so leading
whitespace is normal. Everything here runs in linear time: tags are found with
``str.count``/``str.find`` and the only regexes have no nested repetition, so a
degenerate 200 kB generation cannot stall the reward step.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from rewards._text import completion_text

TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def think_format_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """1.0 for ``<think>...</think><answer>...</answer>`` with only whitespace
    around and between the blocks, each tag exactly once and a non-blank
    answer; else 0.0. The reasoning may be empty."""
    return [1.0 if _is_r1_format(completion_text(c)) else 0.0 for c in completions]


def _is_r1_format(text: str) -> bool:
    if any(text.count(tag) != 1 for tag in TAGS):
        return False
    open_think, close_think = text.find("<think>"), text.find("</think>")
    open_answer, close_answer = text.find("<answer>"), text.find("</answer>")
    if not open_think < close_think < open_answer < close_answer:
        return False
    outside = (
        text[:open_think],
        text[close_think + len("</think>") : open_answer],
        text[close_answer + len("</answer>") :],
    )
    answer = text[open_answer + len("<answer>") : close_answer]
    return all(not part.strip() for part in outside) and bool(answer.strip())


def tag_count_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """0.25 for each of the four R1 tags that appears exactly once: partial
    credit that gives a model far from the format a gradient towards it."""
    scores = []
    for c in completions:
        text = completion_text(c)
        scores.append(0.25 * sum(text.count(tag) == 1 for tag in TAGS))
    return scores


def repetition_ratio(text_or_tokens: str | Sequence[Any], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier one: ``1 - distinct / total``.

    A string is split into lower-cased whitespace-separated words; anything
    else is a sequence of tokens (ids). Fewer than n items gives 0.0.
    Example: "a b a b a b" with n=2 has 5 bigrams, 2 distinct -> 1 - 2/5 = 0.6.
    """
    if n < 1:
        raise ValueError(f"n-gram size n must be >= 1, got {n}")
    if isinstance(text_or_tokens, str):
        items: list = text_or_tokens.lower().split()
    else:
        # Tensor and array elements hash by identity, so every n-gram would
        # look distinct; plain Python values compare by value.
        tolist = getattr(text_or_tokens, "tolist", None)
        items = list(tolist() if tolist is not None else text_or_tokens)
    total = len(items) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(items[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


def repetition_penalty_reward(
    completions: Sequence[Any], *, ngram_size: int = 3, max_penalty: float = -1.0, **columns: Any
) -> list[float]:
    """``max_penalty * repetition_ratio(text, ngram_size)``, in [max_penalty, 0]."""
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0 (it is a penalty), got {max_penalty}")
    return [max_penalty * repetition_ratio(completion_text(c), ngram_size) for c in completions]


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# A word is one CJK ideograph (Chinese is written without spaces) or a run of
# other letters; digits, underscores, punctuation and math symbols are skipped.
_WORD = re.compile(f"[{_CJK}]|[^\\W\\d_{_CJK}]+")

_CJK_CHAR = re.compile(f"[{_CJK}]")

_IS_LANGUAGE = {
    "en": lambda word: word.isascii(),
    "zh": lambda word: _CJK_CHAR.fullmatch(word) is not None,
}


def language_consistency_reward(
    completions: Sequence[Any], *, language: str = "en", **columns: Any
) -> list[float | None]:
    """Share of the reasoning's words that are in ``language`` (DeepSeek-R1's
    language-consistency reward, against language mixing in the chain of thought).

    The reasoning is the text inside ``<think>...</think>`` (all text after
    ``<think>`` if it is never closed; the whole completion without
    ``<think>``). Words are as in ``_WORD``: for "en" a word counts if it is
    made of ASCII letters only (so "café" does not), for "zh" if it is a CJK
    ideograph. Ideographs count one each while Latin words count one per word,
    so the share weighs a Chinese sentence more heavily than an English one of
    the same meaning. A reasoning with no words at all (empty, or only
    numbers and symbols) gives None: there is no language to judge.
    """
    if language not in _IS_LANGUAGE:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(sorted(_IS_LANGUAGE))}")
    is_target = _IS_LANGUAGE[language]
    scores: list[float | None] = []
    for c in completions:
        words = _WORD.findall(_reasoning(completion_text(c)))
        scores.append(sum(map(is_target, words)) / len(words) if words else None)
    return scores


def _reasoning(text: str) -> str:
    start = text.find("<think>")
    if start < 0:
        return text
    start += len("<think>")
    end = text.find("</think>", start)
    return text[start:] if end < 0 else text[start:end]
