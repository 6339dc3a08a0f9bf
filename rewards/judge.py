"""Reward from a generative judge: a causal language model is asked whether a completion is right
and its verdict, read from the words it answers with, is the score.

Where a reward model (``rewards.model``) is a classifier trained to score, a judge is any
instruction-following model prompted to grade, the way DeepSeek-R1's stage 4 used DeepSeek-V3 as a
judge for answers a rule cannot check. The prompt is a template with ``{prompt}``, ``{completion}``
and ``{answer}`` (the row's answer column, "" where it has none), wrapped in the tokenizer's chat
template when the tokenizer has one. The judge answers greedily through a rollout engine (``hf`` or
``vllm``) in a Ray actor (``rlkit.reward_actors``), so the process that calls it never loads the
weights. The first verdict word in its answer gives the score (``verdicts``, default yes -> 1,
no -> 0); an answer with no verdict word scores None (the reward does not apply to that sample, and
the training loop counts it in ``reward/none/<name>``), never a guess.

Config: like a reward model, under ``reward.models`` with ``kind: judge``::

    reward:
      weights: {math_accuracy: 1.0, judged: 0.5}
      models:
        judged: {kind: judge, path: models/my-instruct-model, max_new_tokens: 8}
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Any, Mapping, Sequence

from rewards._remote import RemoteActor
from rewards._text import completion_text

__all__ = ["DEFAULT_TEMPLATE", "JudgeError", "check_judge_model", "check_template", "parse_verdict", "render",
           "RemoteJudge", "judge"]

DEFAULT_TEMPLATE = (
    "Grade the response to a question.\n"
    "Question: {prompt}\n"
    "Reference answer: {answer}\n"
    "Response: {completion}\n"
    "Is the response's final answer correct? Answer yes or no.\n"
    "Verdict:"
)
FIELDS = ("prompt", "completion", "answer")


class JudgeError(ValueError):
    """A judge that cannot work as configured; the message names the setting and the fix."""


def check_judge_model(path: str) -> None:
    """``path`` must be a local Hugging Face causal-LM directory (config.json read, no weights)."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise JudgeError(f"judge model path {path!r} has no config.json: give a local Hugging Face causal LM "
                         "directory saved by save_pretrained")
    with open(config_file, encoding="utf-8") as f:
        try:
            architectures = json.load(f).get("architectures") or []
        except json.JSONDecodeError as err:
            raise JudgeError(f"judge model {config_file!r} is not valid JSON: {err}") from None
    if not any(str(a).endswith(("ForCausalLM", "ForConditionalGeneration")) for a in architectures):
        raise JudgeError(f"judge model {path!r} is not a causal language model (architectures: "
                         f"{architectures or 'none'}); a judge writes its verdict, so it is a *ForCausalLM "
                         "(a *ForSequenceClassification is a reward model: kind: classifier)")


def check_template(template: str) -> None:
    """Only ``{prompt}``, ``{completion}`` and ``{answer}`` may appear; ``{completion}`` must."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise JudgeError(f"judge template is not a valid format string ({err}); write literal braces as {{{{ }}}}")
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise JudgeError(f"judge template has unknown field(s) {unknown}; it may use {{prompt}}, {{completion}}, "
                         "{answer}")
    if "completion" not in names:
        raise JudgeError("judge template has no {completion}: the judge would never see what it grades")


def render(template: str, prompt: Any, completion: Any, answer: Any) -> str:
    return template.format(prompt="" if prompt is None else completion_text(prompt),
                           completion=completion_text(completion), answer="" if answer is None else str(answer))


def parse_verdict(text: str, verdicts: Mapping[str, float]) -> float | None:
    """The score of the first verdict word in the judge's answer (case and punctuation ignored), or
    None when it gives none: ``parse_verdict("Yes, it is.", {"yes": 1, "no": 0}) == 1``."""
    wanted = {k.lower(): float(v) for k, v in verdicts.items()}
    for word in re.findall(r"[\w']+", text.lower()):
        if word in wanted:
            return wanted[word]
    return None


class RemoteJudge:
    """A reward function backed by a judge model in a Ray actor (started on first call)."""

    def __init__(self, path: str, *, name: str = "judge", engine: str = "hf", device: str = "cpu",
                 dtype: str = "float32", template: str = DEFAULT_TEMPLATE,
                 verdicts: Mapping[str, float] | None = None, max_new_tokens: int = 8, num_cpus: float = 1,
                 threads: int = 1, **_unused: Any) -> None:
        check_judge_model(path)  # before any actor starts: a wrong path fails here, in the driver
        check_template(template)
        self.verdicts = dict(verdicts or {"yes": 1.0, "no": 0.0})
        if not self.verdicts:
            raise JudgeError("judge verdicts is empty: give the words the judge answers with and their scores")
        self.__name__ = name
        self.path, self.template, self.max_new_tokens = path, template, max_new_tokens
        options = {"engine": engine, "device": device, "dtype": dtype, "threads": threads}
        self._remote = RemoteActor("JudgeActor", path, options, device=device, num_cpus=num_cpus)

    def __call__(self, completions: Sequence[Any], prompts: Sequence[Any] | None = None,
                 answer: Sequence[Any] | None = None, **columns: Any) -> list[float | None]:
        n = len(completions)
        prompts = list(prompts) if prompts is not None else [None] * n
        answers = list(answer) if answer is not None else [None] * n
        if len(prompts) != n or len(answers) != n:
            raise ValueError(f"got {n} completions, {len(prompts)} prompts and {len(answers)} answers")
        todo = [i for i, c in enumerate(completions) if c is not None]
        texts = [render(self.template, prompts[i], completions[i], answers[i]) for i in todo]
        replies = self.replies(texts)
        out: list[float | None] = [None] * n
        for i, reply in zip(todo, replies):
            out[i] = parse_verdict(reply, self.verdicts)
        return out

    def replies(self, texts: list[str]) -> list[str]:
        """The judge's greedy answers to the rendered prompts."""
        if not texts:
            return []
        return self._remote.call("judge", texts, self.max_new_tokens)

    def close(self) -> None:
        self._remote.close()

    def __repr__(self) -> str:
        return f"RemoteJudge({self.path!r}, verdicts={self.verdicts})"


def judge(path: str, **options: Any) -> RemoteJudge:
    """A reward function asking the causal LM at ``path`` for a verdict on each completion, in a Ray
    actor. Options: ``name``, ``engine`` ("hf" | "vllm"), ``device``, ``dtype``, ``template``,
    ``verdicts`` (word -> score), ``max_new_tokens``, ``num_cpus``, ``threads``."""
    return RemoteJudge(path, **options)
