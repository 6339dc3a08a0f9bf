"""The payloads that cross actor boundaries: `GenerationRequest`, `Rollout`, `TrainBatch`.

A `Rollout` is created by an engine, annotated with rewards and advantages on the driver,
and packed into a `TrainBatch` for the learner. Token-level lists are plain Python lists
(cheap to pickle through Ray's object store); the batch is tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

FINISH_STOP = "stop"  # the engine sampled EOS
FINISH_LENGTH = "length"  # max_new_tokens (or the context) reached: the answer is truncated
FINISH_BUDGET = "budget"  # this iteration's token budget ran out: to be continued (partial rollouts)
FINISH_REPEAT = "repeat"  # stopped early as a degenerate repetition


@dataclass
class SamplingParams:
    max_new_tokens: int = 128  # cap on the whole completion, over all segments
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    token_budget: int | None = None  # new tokens allowed in this call (partial rollouts); None = no cap
    seed: int | None = None


@dataclass
class GenerationRequest:
    prompt_ids: list[int]  # [P]
    n: int = 1  # samples from this prompt (a GRPO group)
    prefix_ids: list[int] = field(default_factory=list)  # [C0] completion so far (resumed partial rollout)
    prefix_logprobs: list[float] = field(default_factory=list)  # [C0]
    prefix_versions: list[int] = field(default_factory=list)  # [C0]
    meta: dict[str, Any] = field(default_factory=dict)  # carried through untouched (problem id, group id)


@dataclass
class Rollout:
    prompt_ids: list[int]  # [P]
    completion_ids: list[int]  # [C] includes EOS when finish_reason == "stop"
    logprobs: list[float]  # [C] log-prob of each token under the policy that sampled it
    versions: list[int]  # [C] policy version (weight-sync count) that sampled each token
    finish_reason: str
    text: str = ""  # decoded completion, without special tokens
    meta: dict[str, Any] = field(default_factory=dict)
    reward: float = 0.0
    advantage: float = 0.0
    # [P+C-1, layers, K] int16: the experts each MoE layer routed every input position to (the last token is
    # never an input); set by engines asked to record routes (routing replay), else None
    routes: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.completion_ids)

    @property
    def truncated(self) -> bool:
        return self.finish_reason in (FINISH_LENGTH, FINISH_REPEAT)


@dataclass
class TrainBatch:
    """Right-padded prompt+completion sequences; token-level fields are aligned to targets
    (position t scores token t+1), hence length L-1."""

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long
    loss_mask: torch.Tensor  # [N, L-1] float, 1 on completion tokens that count
    old_logp: torch.Tensor  # [N, L-1] behaviour log-probs (0 off the mask)
    advantages: torch.Tensor  # [N]
    # no reference log-probs: with KL on, the learner keeps the reference and scores each micro-batch itself
    token_weights: torch.Tensor | None = None  # [N, L-1] importance weights for stale tokens
    versions: torch.Tensor | None = None  # [N, L-1] long, policy version of each completion token
    routes: torch.Tensor | None = None  # [N, L, layers, K] int16 rollout routing of each input position (-1: none)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> "TrainBatch":
        def pick(t):
            return None if t is None else t[index]

        return TrainBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            loss_mask=self.loss_mask[index],
            old_logp=self.old_logp[index],
            advantages=self.advantages[index],
            token_weights=pick(self.token_weights),
            versions=pick(self.versions),
            routes=pick(self.routes),
        )

    def trim(self) -> "TrainBatch":
        """Drop trailing all-padding columns (after splitting, a micro-batch is often shorter)."""
        length = int(self.attention_mask.sum(dim=1).max().item())
        cut = slice(0, length)
        tcut = slice(0, max(length - 1, 1))

        def tok(t):
            return None if t is None else t[:, tcut]

        return TrainBatch(
            input_ids=self.input_ids[:, cut],
            attention_mask=self.attention_mask[:, cut],
            loss_mask=self.loss_mask[:, tcut],
            old_logp=self.old_logp[:, tcut],
            advantages=self.advantages,
            token_weights=tok(self.token_weights),
            versions=tok(self.versions),
            routes=None if self.routes is None else self.routes[:, cut],
        )


def pack_rollouts(rollouts: list[Rollout], pad_id: int) -> TrainBatch:
    """Right-pad prompt+completion of each rollout into a TrainBatch (advantages from the rollouts)."""
    if not rollouts:
        raise ValueError("pack_rollouts got no rollouts")
    lengths = [len(r.prompt_ids) + len(r.completion_ids) for r in rollouts]
    n, width = len(rollouts), max(lengths)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # [N, L]
    attention_mask = torch.zeros((n, width), dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros((n, width - 1))  # [N, L-1]
    old_logp = torch.zeros((n, width - 1))  # [N, L-1]
    versions = torch.full((n, width - 1), -1, dtype=torch.long)  # [N, L-1]
    for i, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[i, : p + c] = torch.tensor(r.prompt_ids + r.completion_ids, dtype=torch.long)
        attention_mask[i, : p + c] = 1
        if c:
            # target position t predicts token t+1, so completion token j sits at p-1+j
            loss_mask[i, p - 1 : p - 1 + c] = 1.0
            old_logp[i, p - 1 : p - 1 + c] = torch.tensor(r.logprobs, dtype=torch.float32)
            versions[i, p - 1 : p - 1 + c] = torch.tensor(r.versions, dtype=torch.long)
    advantages = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)  # [N]
    routes = None
    if all(r.routes is not None for r in rollouts):
        shape = rollouts[0].routes.shape[1:]  # [layers, K]
        routes = torch.full((n, width, *shape), -1, dtype=torch.int16)  # [N, L, layers, K]
        for i, r in enumerate(rollouts):
            routes[i, : r.routes.shape[0]] = r.routes
    return TrainBatch(input_ids, attention_mask, loss_mask, old_logp, advantages, versions=versions, routes=routes)
