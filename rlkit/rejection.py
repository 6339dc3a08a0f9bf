"""Rejection sampling: which of N samples per prompt are kept, and which go into training data.

DeepSeek-R1 (arXiv 2501.12948, 2.3.3) keeps only correct samples and drops mixed languages, long
paragraphs and code blocks in the chain of thought; Kimi k1.5 (arXiv 2501.12599, 2.4) keeps the
shortest correct one (long2short) and builds DPO pairs from it. Here:

- filters (`FILTERS`, by name; applied in the configured order, each to the samples the earlier
  ones kept, so every drop is counted once under the first filter it fails):
  `correct` (the accuracy reward > 0.5), `format` (think_format = 1), `language` (share of the
  target language's words in the reasoning >= min_language_share; no words at all passes),
  `length` (finished by EOS, min_tokens <= tokens <= max_tokens), `no_code` (no ``` block in the
  reasoning), `duplicate` (a prompt's repeated completion text kept once);
- selection rules (`SELECTIONS`): `all` kept samples, `up_to_k` (the first k per prompt),
  `shortest` (the k shortest per prompt);
- preference pairs for DPO: chosen = a prompt's shortest kept sample; rejected = its longest
  correct sample if at least `pair_length_ratio` times longer, and a wrong sample if there is one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from rlkit.registry import Registry
from rlkit.types import FINISH_STOP


@dataclass
class RejectionConfig:
    samples_per_prompt: int = 8  # N samples per prompt
    max_prompts: int = 0  # prompts taken from the head of the prompt set (0 = all)
    prompts_per_call: int = 64  # prompts per generation call (one metrics row each)
    filters: list[str] = field(default_factory=lambda: ["correct", "format", "language", "length", "duplicate"])
    selection: str = "all"  # all | up_to_k | shortest
    k: int = 1  # per prompt, for up_to_k and shortest
    min_tokens: int = 1  # length filter
    max_tokens: int = 0  # length filter (0 = max_new_tokens)
    language: str = "en"  # language filter
    min_language_share: float = 1.0
    pairs: bool = False  # also write pairs.jsonl (prompt, chosen, rejected) for DPO
    pair_length_ratio: float = 1.5  # a correct sample this many times longer than the chosen one is rejected

    def validate(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError(f"rejection.samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        try:  # an unknown name is an error listing the known ones
            for name in self.filters:
                FILTERS.get(name)
            SELECTIONS.get(self.selection)
        except KeyError as e:
            raise ValueError(f"rejection: {e.args[0]}") from None
        if self.k < 1:
            raise ValueError(f"rejection.k must be >= 1, got {self.k}")


@dataclass
class Candidate:
    problem: int  # index of its prompt in the prompt set
    prompt: str  # the prompt column as in the dataset (no template)
    completion: str  # decoded completion
    tokens: int  # completion tokens (EOS included when the sample stopped on it)
    finish_reason: str  # stop | length | repeat
    answer: Any
    scores: dict[str, float | None] = field(default_factory=dict)  # reward name -> score


class RejectionError(ValueError):
    """Rejection sampling that leaves nothing to train on."""


FilterFn = Callable[[list[Candidate], RejectionConfig, str], list[bool]]
FILTERS: Registry[FilterFn] = Registry("rejection filter")
SELECTIONS: Registry[Callable[[list[Candidate], list[int], int], list[int]]] = Registry("selection rule")

# The reward each filter reads (the accuracy reward is the configured one, hence a function).
FILTER_REWARDS: dict[str, Callable[[RejectionConfig, str], str]] = {
    "correct": lambda cfg, accuracy: accuracy,
    "format": lambda cfg, accuracy: "think_format",
    "language": lambda cfg, accuracy: "language_consistency",
}


@FILTERS.register("correct")
def _correct(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    return [is_correct(c, accuracy) for c in cands]


@FILTERS.register("format")
def _format(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    return [(c.scores.get("think_format") or 0.0) >= 1.0 for c in cands]


@FILTERS.register("language")
def _language(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    # None: no words in the reasoning, so no language to mix
    return [c.scores.get("language_consistency") is None or c.scores["language_consistency"] >= cfg.min_language_share
            for c in cands]


@FILTERS.register("length")
def _length(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    top = cfg.max_tokens or float("inf")
    return [c.finish_reason == FINISH_STOP and cfg.min_tokens <= c.tokens <= top for c in cands]


@FILTERS.register("no_code")
def _no_code(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    return ["```" not in c.completion.split("</think>")[0] for c in cands]


@FILTERS.register("duplicate")
def _duplicate(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> list[bool]:
    seen: set[tuple[int, str]] = set()
    keep = []
    for c in cands:
        key = (c.problem, c.completion.strip())
        keep.append(key not in seen)
        seen.add(key)
    return keep


def is_correct(c: Candidate, accuracy: str) -> bool:
    score = c.scores.get(accuracy)
    return score is not None and score > 0.5


def needed_rewards(cfg: RejectionConfig, accuracy: str) -> list[str]:
    """The rewards to compute for the configured filters (the accuracy reward always: it is reported)."""
    names = [accuracy] + [FILTER_REWARDS[f](cfg, accuracy) for f in cfg.filters if f in FILTER_REWARDS]
    return list(dict.fromkeys(names))


def score_candidates(cands: list[Candidate], columns: dict[str, list[Any]], names: list[str],
                     cfg: RejectionConfig) -> None:
    """Fill `candidate.scores[name]` with each reward (TRL contract: completions + dataset columns)."""
    import rewards

    texts = [c.completion for c in cands]
    for name in names:
        extra = {"language": cfg.language} if name == "language_consistency" else {}
        values = rewards.get(name)(texts, **columns, **extra)
        for c, v in zip(cands, values):
            c.scores[name] = None if v is None else float(v)


def apply_filters(cands: list[Candidate], cfg: RejectionConfig, accuracy: str) -> tuple[list[bool], dict[str, int]]:
    """Keep mask over `cands` and, per filter, how many samples it dropped (first failing filter only)."""
    keep = [True] * len(cands)
    dropped: dict[str, int] = {}
    for name in cfg.filters:
        alive = [i for i, k in enumerate(keep) if k]
        verdict = FILTERS.get(name)([cands[i] for i in alive], cfg, accuracy)
        dropped[name] = 0
        for i, ok in zip(alive, verdict):
            if not ok:
                keep[i] = False
                dropped[name] += 1
    return keep, dropped


@SELECTIONS.register("all")
def _select_all(cands: list[Candidate], kept: list[int], k: int) -> list[int]:
    return list(kept)


@SELECTIONS.register("up_to_k")
def _select_up_to_k(cands: list[Candidate], kept: list[int], k: int) -> list[int]:
    taken: Counter[int] = Counter()
    out = []
    for i in kept:
        if taken[cands[i].problem] < k:
            taken[cands[i].problem] += 1
            out.append(i)
    return out


@SELECTIONS.register("shortest")
def _select_shortest(cands: list[Candidate], kept: list[int], k: int) -> list[int]:
    by_problem: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        by_problem[cands[i].problem].append(i)
    chosen = [i for group in by_problem.values() for i in sorted(group, key=lambda i: cands[i].tokens)[:k]]
    return sorted(chosen)


def select(cands: list[Candidate], keep: list[bool], rule: str, k: int) -> list[int]:
    return SELECTIONS.get(rule)(cands, [i for i, ok in enumerate(keep) if ok], k)


def preference_pairs(cands: list[Candidate], keep: list[bool], accuracy: str, *,
                     length_ratio: float = 1.5) -> list[tuple[int, int]]:
    """(chosen, rejected) indices: per prompt, its shortest kept sample against its longest correct
    sample when that is >= length_ratio times longer, and against its first wrong sample."""
    by_problem: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(cands):
        by_problem[c.problem].append(i)
    pairs = []
    for group in by_problem.values():
        kept = [i for i in group if keep[i]]
        if not kept:
            continue
        chosen = min(kept, key=lambda i: (cands[i].tokens, i))
        correct = [i for i in group if is_correct(cands[i], accuracy)]
        longest = max(correct, key=lambda i: (cands[i].tokens, -i))
        if cands[longest].tokens >= length_ratio * cands[chosen].tokens:
            pairs.append((chosen, longest))
        wrong = [i for i in group if not is_correct(cands[i], accuracy)]
        if wrong:
            pairs.append((chosen, wrong[0]))
    return pairs


def check_kept(kept: int, total: int, prompts: int, dropped: dict[str, int]) -> None:
    """Nothing kept is an error naming the counts per filter, before anything trains on it."""
    if kept == 0:
        by = ", ".join(f"{name} {n}" for name, n in dropped.items()) or "no filter"
        raise RejectionError(
            f"rejection sampling kept 0 of {total} samples ({prompts} prompts); dropped by: {by}. "
            "Nothing to fine-tune on: sample more per prompt, relax the filters, or start from a stronger model"
        )
