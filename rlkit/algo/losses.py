"""Policy-gradient loss terms: clipped surrogate, its aggregation, KL and other regularisers.

Shapes: N sequences, T completion positions. ``mask`` is a float [N, T] tensor
(1.0 on tokens that count; fractional values act as per-token weights; 0.0 on
prompt, padding and excluded tokens). Positions where ``mask == 0`` may hold
anything (padding log-probs of 0, -inf, ...): they never reach the loss, its
gradient, or the metrics.

Sources: GRPO (arXiv:2402.03300), DAPO (arXiv:2503.14476), Dr. GRPO
(arXiv:2503.20783), GSPO (arXiv:2507.18071), Kimi k1.5 (arXiv:2501.12599).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor

from rlkit.registry import Registry

AGGREGATIONS: Registry = Registry("loss aggregation")
RATIO_LEVELS: Registry = Registry("importance-ratio level")
KL_ESTIMATORS: Registry = Registry("KL estimator")

# Denominators are clamped to this so an all-masked batch gives 0, not 0/0.
_TINY = 1e-12


# --------------------------------------------------------------------------- helpers


def masked_mean(x: Tensor, mask: Tensor, total: float | Tensor | None = None) -> Tensor:
    """sum(x * mask) / total, with ``total`` defaulting to sum(mask).

    Pass ``total`` = the mask sum of the whole batch (all micro-batches, all
    ranks) to make per-micro-batch means add up to the full-batch mean.
    Returns 0 (not NaN) when nothing is masked in.
    """
    if x.shape != mask.shape:
        raise ValueError(f"masked_mean: x shape {tuple(x.shape)} != mask shape {tuple(mask.shape)}")
    mask = mask.to(x.dtype)
    x = torch.where(mask > 0, x, torch.zeros_like(x))  # masked-out NaN/inf must not leak
    denom = mask.sum() if total is None else _check_total(total, "total")
    return (x * mask).sum() / _clamp_denominator(denom)


def loss_normalizers(mask: Tensor) -> dict[str, float]:
    """The local counts that the aggregations divide by, for summing across micro-batches.

    Returns {"total_tokens": sum(mask), "total_seqs": rows with any mask weight}.
    Sum each over every micro-batch and rank of one optimizer step and pass the
    sums to ``policy_loss(..., total_tokens=, total_seqs=)``.
    """
    mask = mask.float()
    return {
        "total_tokens": float(mask.sum()),
        "total_seqs": float((mask.sum(dim=1) > 0).sum()),
    }


def _check_total(total: float | Tensor, name: str) -> float | Tensor:
    if float(total) < 0:
        raise ValueError(f"{name} must be >= 0, got {float(total)}")
    return total


def _clamp_denominator(denom: float | Tensor) -> float | Tensor:
    if isinstance(denom, Tensor):
        return denom.clamp_min(_TINY)
    return max(float(denom), _TINY)


def _num_sequences(mask: Tensor) -> Tensor:
    # Fully masked rows (overlong-filtered, padding) neither add to nor dilute the loss.
    return (mask.sum(dim=1) > 0).sum().to(mask.dtype)


# --------------------------------------------------------------------------- aggregations
# Signature: fn(loss_tok [N, T] (zero where mask == 0), mask [N, T], *, total_tokens,
# total_seqs, max_tokens) -> scalar. Each uses the totals that concern it and ignores
# the rest, so a caller may always pass both.


@AGGREGATIONS.register("token_mean")
def _token_mean(loss_tok: Tensor, mask: Tensor, *, total_tokens=None, total_seqs=None, max_tokens=None) -> Tensor:
    """DAPO token-level loss: sum(M * L) / sum(M) over the whole batch."""
    denom = mask.sum() if total_tokens is None else _check_total(total_tokens, "total_tokens")
    return (loss_tok * mask).sum() / _clamp_denominator(denom)


@AGGREGATIONS.register("seq_mean")
def _seq_mean(loss_tok: Tensor, mask: Tensor, *, total_tokens=None, total_seqs=None, max_tokens=None) -> Tensor:
    """GRPO paper: mean over sequences of (sum_t M * L / sum_t M)."""
    per_seq = (loss_tok * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(_TINY)  # [N]
    denom = _num_sequences(mask) if total_seqs is None else _check_total(total_seqs, "total_seqs")
    return per_seq.sum() / _clamp_denominator(denom)


@AGGREGATIONS.register("seq_sum_const")
def _seq_sum_const(loss_tok: Tensor, mask: Tensor, *, total_tokens=None, total_seqs=None, max_tokens=None) -> Tensor:
    """Dr. GRPO: sum(M * L) / (num_sequences * max_tokens), a length-independent constant."""
    if max_tokens is None:
        raise ValueError("aggregation 'seq_sum_const' needs max_tokens (the completion token budget)")
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    n = _num_sequences(mask) if total_seqs is None else _check_total(total_seqs, "total_seqs")
    return (loss_tok * mask).sum() / _clamp_denominator(n * max_tokens)


# --------------------------------------------------------------------------- ratio levels
# Signature: fn(log_ratio [N, T] (zero where mask == 0), mask [N, T]) -> ratio [N, T].


@RATIO_LEVELS.register("token")
def _token_ratio(log_ratio: Tensor, mask: Tensor) -> Tensor:
    return torch.exp(log_ratio)  # [N, T]


@RATIO_LEVELS.register("sequence")
def _sequence_ratio(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """GSPO: s_i = exp(mean over the masked tokens of log rho_{i,t}), the same for every token."""
    mean_log = (log_ratio * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(_TINY)  # [N]
    return torch.exp(mean_log)[:, None].expand_as(log_ratio)  # [N, T]


# --------------------------------------------------------------------------- policy loss


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
    level: str = "token",
    token_weights: Tensor | None = None,
    total_tokens: float | Tensor | None = None,
    total_seqs: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped-surrogate policy loss, aggregated over a (micro-)batch.

    Per token: L = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A),
    rho = exp(logp - old_logp). ``clip_high`` > ``clip_low`` is DAPO's clip-higher
    (e.g. 0.28 vs 0.2).

    ``level="sequence"`` is GSPO: rho is replaced by the sequence ratio
    s_i = exp(mean_t over the mask of (logp - old_logp)), clipped at sequence level,
    and the resulting per-sequence L_i is given to every masked token of sequence i.
    The aggregation then applies as usual: ``seq_mean`` gives GSPO's mean over
    sequences of L_i exactly; ``token_mean`` weights each L_i by its token count.
    GSPO's paper uses much tighter clip ranges (about 3e-4 / 4e-4) than token-level PPO.

    Args:
        logp: [N, T] log-probs under the current policy (requires grad).
        old_logp: [N, T] log-probs of the policy that the ratio is taken against
            (behaviour, or proximal with ``token_weights``); detached here.
        advantages: [N] one advantage per sequence; detached here.
        mask: [N, T] float loss mask (see module docstring).
        aggregation: a name in ``AGGREGATIONS``: "token_mean", "seq_mean", "seq_sum_const".
        max_tokens: completion-token budget, required by "seq_sum_const".
        level: a name in ``RATIO_LEVELS``: "token" or "sequence" (GSPO).
        token_weights: [N, T] detached per-token importance weights multiplying L,
            e.g. ``truncated_importance_weights`` for stale partial-rollout segments.
        total_tokens: for "token_mean", the mask sum of the WHOLE optimizer batch
            (all micro-batches and ranks); default: this call's sum(mask).
        total_seqs: for "seq_mean"/"seq_sum_const", the number of sequences with any
            mask weight in the whole batch; default: this call's count.
            With the totals given, the sum of the micro-batch losses equals the
            full-batch loss, so gradient accumulation is independent of micro-batch size.

    Returns:
        (loss, metrics). ``metrics`` holds python floats:
          - ``loss``: the returned loss value;
          - ``num_tokens``: sum(mask);
          - ``clip_low_count``: mask weight of tokens with rho < 1 - clip_low and A < 0
            (where the lower clip binds and the token has no gradient);
          - ``clip_high_count``: mask weight of tokens with rho > 1 + clip_high and A > 0;
          - ``ratio_sum`` / ``ratio_max``: mask-weighted sum / max of the rho actually used
            (the sequence ratio for every token when level="sequence");
          - ``clip_frac_low`` = clip_low_count / num_tokens, ``clip_frac_high`` likewise,
            ``ratio_mean`` = ratio_sum / num_tokens (all 0.0 when num_tokens == 0).
        Combine micro-batches with ``combine_loss_metrics``, which sums the counts.
    """
    _check_policy_inputs(logp, old_logp, advantages, mask, clip_low, clip_high, token_weights)
    aggregate = AGGREGATIONS.get(aggregation)
    ratio_of = RATIO_LEVELS.get(level)

    mask = mask.to(logp.dtype)  # [N, T]
    live = mask > 0  # [N, T]
    zeros = torch.zeros_like(logp)
    # Masked positions are set to log-ratio 0 before exp so padding values cannot overflow.
    log_ratio = torch.where(live, logp - old_logp.detach(), zeros)  # [N, T]
    ratio = ratio_of(log_ratio, mask)  # [N, T]
    adv = advantages.detach().to(logp.dtype)[:, None]  # [N, 1]
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    loss_tok = -torch.minimum(ratio * adv, clipped * adv)  # [N, T]
    if token_weights is not None:
        # Zero the weights first: where() alone would still send 0 * inf = NaN gradients back.
        loss_tok = loss_tok * torch.where(live, token_weights.detach().to(logp.dtype), zeros)
    loss_tok = torch.where(live, loss_tok, zeros)  # [N, T]

    loss = aggregate(loss_tok, mask, total_tokens=total_tokens, total_seqs=total_seqs, max_tokens=max_tokens)
    metrics = _ratio_metrics(ratio.detach(), adv, mask, live, clip_low, clip_high)
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def _check_policy_inputs(logp, old_logp, advantages, mask, clip_low, clip_high, token_weights) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp must be [N, T], got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("mask", mask), ("token_weights", token_weights)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"advantages must be [N] = [{logp.shape[0]}] (one per sequence), got shape {tuple(advantages.shape)}"
        )
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")


@torch.no_grad()
def _ratio_metrics(ratio: Tensor, adv: Tensor, mask: Tensor, live: Tensor, clip_low: float, clip_high: float) -> dict[str, float]:
    low = (ratio < 1.0 - clip_low) & (adv < 0) & live  # [N, T]
    high = (ratio > 1.0 + clip_high) & (adv > 0) & live  # [N, T]
    num_tokens = float(mask.sum())
    counts = {
        "num_tokens": num_tokens,
        "clip_low_count": float((low * mask).sum()),
        "clip_high_count": float((high * mask).sum()),
        "ratio_sum": float((torch.where(live, ratio, torch.zeros_like(ratio)) * mask).sum()),
        "ratio_max": float(ratio[live].max()) if bool(live.any()) else 0.0,
    }
    return _with_fractions(counts)


def _with_fractions(m: dict[str, float]) -> dict[str, float]:
    n = m["num_tokens"]
    m["clip_frac_low"] = m["clip_low_count"] / n if n > 0 else 0.0
    m["clip_frac_high"] = m["clip_high_count"] / n if n > 0 else 0.0
    m["ratio_mean"] = m["ratio_sum"] / n if n > 0 else 0.0
    return m


def combine_loss_metrics(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Merge ``policy_loss`` metrics of micro-batches into those of the whole batch.

    Counts and ``loss`` are summed (with whole-batch totals the micro-batch losses add
    up to the batch loss), ``ratio_max`` is the max, fractions are recomputed.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("combine_loss_metrics needs at least one metrics dict")
    out = {k: sum(p[k] for p in parts) for k in ("num_tokens", "clip_low_count", "clip_high_count", "ratio_sum", "loss")}
    out["ratio_max"] = max(p["ratio_max"] for p in parts)
    return _with_fractions(out)


# --------------------------------------------------------------------------- KL and regularisers


@KL_ESTIMATORS.register("k1")
def _k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return logp - ref_logp  # [N, T]


@KL_ESTIMATORS.register("k2")
def _k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return 0.5 * (logp - ref_logp) ** 2  # [N, T]


K3_LINEAR_FROM = 20.0  # d beyond which k3's exp(d) continues as its tangent line


@KL_ESTIMATORS.register("k3")
def _k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    # exp(d) would overflow to inf (and poison the gradient) where the reference gives a token
    # far more mass than the policy. Beyond d = 20 it continues as its tangent line instead of
    # a clamp: a clamp would zero the gradient of exactly the most divergent tokens, which are
    # the ones the penalty exists to pull back; the line keeps pulling them at slope e^20.
    d = ref_logp - logp  # [N, T]
    c = K3_LINEAR_FROM
    exp_d = torch.where(d > c, math.exp(c) * (1.0 + d - c), torch.exp(d.clamp(max=c)))  # [N, T]
    return exp_d - d - 1.0  # [N, T]


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta.

    kind (a name in ``KL_ESTIMATORS``):
      - "k1": logp - ref_logp (unbiased, can be negative);
      - "k2": (logp - ref_logp)^2 / 2;
      - "k3": exp(d) - d - 1 with d = ref_logp - logp (GRPO, arXiv:2402.03300;
        unbiased, always >= 0); beyond d = 20, exp(d) continues linearly (finite, and the
        gradient of the most divergent tokens stays the largest, never 0).
    ``ref_logp`` is detached. Returns [N, T]; reduce with ``masked_mean``.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
    return KL_ESTIMATORS.get(kind)(logp, ref_logp.detach())


def kimi_mirror_descent_penalty(logp: Tensor, ref_logp: Tensor, tau: float) -> Tensor:
    """Kimi k1.5 (arXiv:2501.12599) regulariser: (tau / 2) * (logp - ref_logp)^2, [N, T].

    ``ref_logp`` is the policy at the start of the iteration (detached here). It is tau times
    the "k2" estimator, which is how training reaches it: ``algo.kl_kind=k2``,
    ``algo.kl_coef=tau`` and ``algo.ref_refresh_every=k`` (the reference becomes the current
    policy every k optimizer steps). With one optimizer step per batch, as the recipes take,
    k = 1 makes the term vanish at each step's start; k > 1 is the useful setting there.
    """
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    return tau * kl_penalty(logp, ref_logp, kind="k2")  # [N, T]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim: [..., V] -> [...].

    H = logsumexp(z) - sum softmax(z) * z, which needs one [..., V] buffer (the
    softmax) instead of both probabilities and log-probabilities. Logits must be finite.
    """
    lse = torch.logsumexp(logits, dim=-1)  # [...]
    probs = torch.softmax(logits, dim=-1)  # [..., V]
    # einsum contracts without materialising probs * logits.
    return lse - torch.einsum("...v,...v->...", probs, logits)  # [...]


@torch.no_grad()
def truncated_importance_weights(proximal_logp: Tensor, behaviour_logp: Tensor, cap: float) -> Tensor:
    """min(pi_prox / pi_behaviour, cap) per token, detached, [N, T].

    Corrects tokens sampled by an older policy (stale segments of partial rollouts):
    the loss ratio is taken against the proximal policy and these weights account
    for the sampling policy; the cap bounds their variance.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if proximal_logp.shape != behaviour_logp.shape:
        raise ValueError(
            f"behaviour_logp shape {tuple(behaviour_logp.shape)} != proximal_logp shape {tuple(proximal_logp.shape)}"
        )
    log_w = (proximal_logp - behaviour_logp).clamp(max=math.log(cap))  # [N, T]
    return torch.exp(log_w)  # [N, T]


__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "RATIO_LEVELS",
    "combine_loss_metrics",
    "entropy_from_logits",
    "kimi_mirror_descent_penalty",
    "kl_penalty",
    "loss_normalizers",
    "masked_mean",
    "policy_loss",
    "truncated_importance_weights",
]
