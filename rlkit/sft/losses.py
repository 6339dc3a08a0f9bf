"""Supervised and preference losses: completion-only NLL and DPO (arXiv 2305.18290).

Pure torch on log-probs the caller computed, so each formula is checkable by hand:

- `sft_loss`: -sum(mask * logp) / total_tokens, where total_tokens counts the completion tokens
  of the WHOLE batch (all micro-batches), so summing micro-batch losses gives the batch's
  token-mean NLL whatever the micro-batch size.
- `dpo_loss`: -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l))), averaged over pairs, where
  pi_* / ref_* are sequence log-probs (sums over completion tokens) of the chosen (w) and
  rejected (l) completions under the policy and the frozen reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                   with_router: bool = False):
    """Log-prob of every next token: logp [N, L-1] (position t scores token t+1) and the model output."""
    kwargs = {"output_router_logits": True} if with_router else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logits = out.logits[:, :-1, :].float()  # [N, L-1, V]
    logp = torch.log_softmax(logits, dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)  # [N, L-1]
    return logp, out


def sft_loss(logp: torch.Tensor, loss_mask: torch.Tensor, total_tokens: float) -> torch.Tensor:
    """Completion-only NLL. logp, loss_mask: [N, L-1]; total_tokens: completion tokens of the whole batch."""
    if total_tokens <= 0:
        raise ValueError("sft_loss: the batch has no completion tokens (total_tokens must be > 0)")
    return -(logp * loss_mask).sum() / total_tokens


def sequence_logprob(logp: torch.Tensor, loss_mask: torch.Tensor, *, mean: bool = False) -> torch.Tensor:
    """Sum (or, with `mean`, average) of the completion tokens' log-probs per row: [N, L-1] -> [N]."""
    total = (logp * loss_mask).sum(dim=1)  # [N]
    return total / loss_mask.sum(dim=1).clamp(min=1) if mean else total


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean DPO loss over pairs; every argument is [N] sequence log-probs. Also returns the implicit
    rewards' metrics: chosen/rejected reward (beta * log-ratio), margin, and the share of pairs
    whose chosen reward is the higher one."""
    if beta <= 0:
        raise ValueError(f"dpo beta must be > 0, got {beta}")
    chosen_reward = beta * (policy_chosen - ref_chosen)  # [N]
    rejected_reward = beta * (policy_rejected - ref_rejected)  # [N]
    margin = chosen_reward - rejected_reward  # [N]
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        metrics = {
            "dpo/chosen_reward": float(chosen_reward.mean()),
            "dpo/rejected_reward": float(rejected_reward.mean()),
            "dpo/margin": float(margin.mean()),
            "dpo/accuracy": float((margin > 0).float().mean()),
        }
    return loss, metrics
