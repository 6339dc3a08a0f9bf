"""Reward from a learned reward model: a local Hugging Face sequence-classification model
(one output logit per sequence, as TRL's reward models and most published ones have) scores
``prompt + completion``.

Two ways to use it, both of the reward-function contract:

- :func:`reward_model` returns a reward function that runs the model in a Ray actor
  (``rlkit.reward_actors``), so the process that calls it never loads the weights; the actor
  starts on the first call (after the training loop has started Ray) and takes a GPU when
  ``device="cuda"``. The path is checked at once, before any actor starts.
- :class:`RewardModelScorer` is the model itself, in this process (what the actor runs;
  usable directly, e.g. as a TRL reward function).

Scores are the model's raw logits, or with ``normalize=True`` standardised over the batch
scored in one call (mean 0, standard deviation 1), which keeps a reward model's arbitrary
scale from swamping the rule rewards it is combined with. A sample whose completion is None
scores None (the reward does not apply).

Config: a training config names a reward model like any reward, under ``reward.weights``,
and says where it lives under ``reward.models`` (``rlkit.config.RewardModelConfig``)::

    reward:
      weights: {math_accuracy: 1.0, helpfulness: 0.5}
      models:
        helpfulness: {path: models/my-rm, device: cpu, batch_size: 16, normalize: true}
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from rewards._remote import RemoteActor
from rewards._text import completion_text

__all__ = ["RewardModelError", "check_reward_model", "RewardModelScorer", "reward_model", "normalize_batch"]


class RewardModelError(ValueError):
    """A reward model path that cannot serve as a reward model; the message says why and what to do."""


def check_reward_model(path: str) -> dict:
    """Read ``path``'s config.json (no weights) and check it is a one-logit sequence classifier.

    Returns the config as a dict. Raises :class:`RewardModelError` naming the path and the fix.
    """
    config_file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise RewardModelError(f"reward model path {path!r} is not a directory; give a local Hugging Face model "
                               f"directory (with config.json) saved by save_pretrained")
    if not os.path.isfile(config_file):
        raise RewardModelError(f"reward model path {path!r} has no config.json: not a Hugging Face model directory")
    with open(config_file, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise RewardModelError(f"reward model {config_file!r} is not valid JSON: {err}") from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise RewardModelError(
            f"reward model path {path!r} is not a sequence-classification model (architectures: "
            f"{architectures or 'none'}); a reward model is saved as *ForSequenceClassification with one "
            f"label, e.g. AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    if labels != 1:
        raise RewardModelError(f"reward model {path!r} has {labels} labels; a reward model has one output "
                               f"(num_labels=1), its logit being the reward")
    return config


def normalize_batch(values: list[float]) -> list[float]:
    """Standardise over the batch: (r - mean) / std (population std); all equal -> all 0."""
    if not values:
        return []
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [0.0 if std < 1e-8 else (v - mean) / std for v in values]


def _pair_text(prompt: Any, completion: Any) -> str:
    prompt_text = "" if prompt is None else completion_text(prompt)
    return prompt_text + completion_text(completion)


class RewardModelScorer:
    """The reward model in this process: ``scorer.score(prompts, completions) -> list[float]``."""

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 16, max_length: int = 1024,
                 dtype: str = "float32", threads: int = 0) -> None:
        check_reward_model(path)
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device, self.batch_size, self.max_length = device, max(1, batch_size), max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.truncation_side = "left"  # a long prompt loses its start, never the completion
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
        if self.tokenizer.pad_token is None:  # a batch needs padding, and the model must know where it ends
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float | None]:
        import torch

        texts = [None if c is None else _pair_text(p, c) for p, c in zip(prompts, completions)]
        todo = [i for i, t in enumerate(texts) if t is not None]
        out: list[float | None] = [None] * len(texts)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits  # [b, 1]
            for i, value in zip(chunk, logits[:, 0].float().tolist()):
                out[i] = value
        return out


class RemoteRewardModel:
    """A reward function backed by a reward model in a Ray actor (started on first call)."""

    def __init__(self, path: str, *, name: str = "reward_model", device: str = "cpu", batch_size: int = 16,
                 max_length: int = 1024, normalize: bool = False, dtype: str = "float32", num_cpus: float = 1,
                 threads: int = 1) -> None:
        check_reward_model(path)  # before any actor starts: a wrong path fails here, in the driver
        self.__name__ = name
        self.path, self.normalize = path, normalize
        options = {"device": device, "batch_size": batch_size, "max_length": max_length, "dtype": dtype,
                   "threads": threads}
        self._remote = RemoteActor("RewardModelActor", path, options, device=device, num_cpus=num_cpus)

    def __call__(self, completions: Sequence[Any], prompts: Sequence[Any] | None = None,
                 **columns: Any) -> list[float | None]:
        prompts = list(prompts) if prompts is not None else [None] * len(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(prompts)} prompts")
        values = self._remote.call("score", prompts, list(completions))
        if not self.normalize:
            return values
        present = [i for i, v in enumerate(values) if v is not None]
        for i, v in zip(present, normalize_batch([values[i] for i in present])):
            values[i] = v
        return values

    def close(self) -> None:
        self._remote.close()

    def __repr__(self) -> str:
        return f"RemoteRewardModel({self.path!r}, normalize={self.normalize})"


def reward_model(path: str, **options: Any) -> RemoteRewardModel:
    """A reward function scoring ``prompt + completion`` with the reward model at ``path`` in a Ray
    actor. Options: ``name``, ``device`` ("cpu" | "cuda"), ``batch_size``, ``max_length``
    (tokens, the prompt cut from the left), ``normalize`` (per-batch standardisation),
    ``dtype``, ``num_cpus``, ``threads``."""
    return RemoteRewardModel(path, **options)
