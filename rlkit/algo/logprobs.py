"""Log-probabilities of the distribution a token was sampled from, shared by engines and learner.

An engine samples from softmax(logits / T), restricted to the top-p nucleus and renormalised
(T = 0 is greedy: the argmax, scored under T = 1). The log-prob it reports for a token is under
that same distribution, and the learner computes its own log-probs the same way from its own
logits, so at equal weights the importance ratio is exactly 1 and after an update it is the
ratio of the two distributions actually sampled from.

Nucleus rule (as vLLM's): sorted by probability, a token is kept while the mass of the tokens
strictly more likely than it is below `top_p`; the most likely token is always kept.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """logits / T in float32 (T <= 0, greedy, scores under T = 1): [..., V] -> [..., V]."""
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits


def nucleus_mask(logp: Tensor, top_p: float) -> Tensor:
    """Which tokens the top-p nucleus keeps: log-probs [..., V] -> bool [..., V]."""
    if top_p >= 1.0:
        return torch.ones_like(logp, dtype=torch.bool)
    sorted_logp, order = logp.sort(dim=-1, descending=True)  # [..., V]
    probs = sorted_logp.exp()
    before = probs.cumsum(dim=-1) - probs  # mass strictly ahead of each token
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def sampling_logprobs(logits: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """The whole sampling distribution as log-probs: [..., V] -> [..., V] (-inf outside the nucleus)."""
    logp = torch.log_softmax(scaled_logits(logits, temperature), dim=-1)
    if top_p < 1.0:
        logp = logp.masked_fill(~nucleus_mask(logp, top_p), float("-inf"))
        logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
    return logp


def target_logprobs(logits: Tensor, targets: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """Log-prob of each target token under the sampling distribution: logits [..., V], targets [...] -> [...].

    Differentiable. With top_p < 1 it is log_softmax(z)[t] - log(mass of the nucleus): exact for
    every token inside the nucleus (every sampled one), and finite for a token that float noise
    put just outside this model's nucleus, so one such token cannot turn a ratio into 0 or inf.
    """
    logp = torch.log_softmax(scaled_logits(logits, temperature), dim=-1)  # [..., V]
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [...]
    if top_p < 1.0:
        with torch.no_grad():
            keep = nucleus_mask(logp.detach(), top_p)
        picked = picked - torch.logsumexp(logp.masked_fill(~keep, float("-inf")), dim=-1)
    return picked
