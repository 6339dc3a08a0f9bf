import math

import pytest
import torch

from rlkit.algo import (
    AGGREGATIONS,
    combine_loss_metrics,
    loss_normalizers,
    policy_loss,
)

torch.set_num_threads(1)
LN = math.log


def one_token(ratio, adv, **kw):
    """A single sequence with one token whose ratio pi/pi_old is `ratio`."""
    logp = torch.tensor([[LN(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, m = policy_loss(logp, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1), **kw)
    loss.backward()
    return loss.item(), logp.grad.item(), m


# ----------------------------------------------------------------- clipping by hand


def test_positive_advantage_clipped_at_one_plus_eps():
    # ratio 1.5, A=+1: -min(1.5, clip(1.5, 0.8, 1.2)=1.2) = -1.2; clipped -> no gradient
    loss, grad, m = one_token(1.5, 1.0)
    assert loss == pytest.approx(-1.2)
    assert grad == 0.0
    assert m["clip_frac_high"] == 1.0 and m["clip_frac_low"] == 0.0


def test_negative_advantage_clipped_at_one_minus_eps():
    # ratio 0.5, A=-1: -min(-0.5, -0.8) = 0.8; clipped -> no gradient
    loss, grad, m = one_token(0.5, -1.0)
    assert loss == pytest.approx(0.8)
    assert grad == 0.0
    assert m["clip_frac_low"] == 1.0 and m["clip_frac_high"] == 0.0


def test_unclipped_sides_keep_their_gradient():
    # ratio 1.5, A=-1: -min(-1.5, -1.2) = 1.5; dL/dlogp = -A * ratio = 1.5
    loss, grad, m = one_token(1.5, -1.0)
    assert loss == pytest.approx(1.5) and grad == pytest.approx(1.5)
    assert m["clip_frac_low"] == 0.0 and m["clip_frac_high"] == 0.0
    # ratio 0.5, A=+1: -min(0.5, 0.8) = -0.5; dL/dlogp = -A * ratio = -0.5
    loss, grad, _ = one_token(0.5, 1.0)
    assert loss == pytest.approx(-0.5) and grad == pytest.approx(-0.5)


def test_clip_higher():
    # DAPO clip-higher: ratio 1.25, A=+1; eps_high 0.28 -> 1.25 inside [0.8, 1.28] -> -1.25
    assert one_token(1.25, 1.0, clip_high=0.28)[0] == pytest.approx(-1.25)
    # symmetric 0.2 -> clipped at 1.2 -> -1.2
    assert one_token(1.25, 1.0)[0] == pytest.approx(-1.2)


# ----------------------------------------------------------------- aggregation by hand


def two_sequences(aggregation, **kw):
    # ratio 1 everywhere so L = -A on every token. A = [1, -2];
    # sequence 0 has 3 tokens (L = -1 each), sequence 1 has 1 token (L = +2).
    logp = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    loss, _ = policy_loss(logp, logp.clone(), torch.tensor([1.0, -2.0]), mask, aggregation=aggregation, **kw)
    return loss.item()


def test_token_mean_by_hand():
    # (3 * -1 + 1 * 2) / 4 tokens = -0.25
    assert two_sequences("token_mean") == pytest.approx(-0.25)


def test_seq_mean_by_hand():
    # per sequence: -3/3 = -1 and 2/1 = 2; mean = 0.5
    assert two_sequences("seq_mean") == pytest.approx(0.5)


def test_seq_sum_const_by_hand():
    # (3 * -1 + 2) / (2 sequences * 4 max_tokens) = -1/8 = -0.125
    assert two_sequences("seq_sum_const", max_tokens=4) == pytest.approx(-0.125)


def test_totals_override_local_counts():
    # token_mean with total_tokens 10: -1 / 10; seq_mean with total_seqs 4: (-1 + 2) / 4
    assert two_sequences("token_mean", total_tokens=10.0) == pytest.approx(-0.1)
    assert two_sequences("seq_mean", total_seqs=4) == pytest.approx(0.25)


def test_seq_sum_const_requires_max_tokens():
    with pytest.raises(ValueError, match="seq_sum_const' needs max_tokens"):
        two_sequences("seq_sum_const")


def test_unknown_aggregation_lists_choices():
    with pytest.raises(KeyError, match="unknown loss aggregation 'mean'.*seq_mean, seq_sum_const, token_mean"):
        two_sequences("mean")


# ----------------------------------------------------------------- GSPO


def test_gspo_sequence_ratio_by_hand():
    # log ratios [ln 2, 0] on the 2 masked tokens, third token is padding (garbage, masked):
    # s = exp((ln 2 + 0) / 2) = sqrt(2) = 1.41421
    logp = torch.tensor([[LN(2.0), 0.0, 50.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.0, 0.0, -1e9]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)

    # clip 0.2: s clipped to 1.2 -> L_i = -1.2
    loss, m = policy_loss(logp, old, adv, mask, level="sequence", aggregation="seq_mean")
    assert loss.item() == pytest.approx(-1.2)
    assert m["ratio_mean"] == pytest.approx(math.sqrt(2)) and m["clip_frac_high"] == 1.0

    # clip_high 0.5: s = 1.41421 inside [0.8, 1.5] -> L_i = -1.41421;
    # dL/dlogp_t = -A * s * (1/2 tokens) = -0.70711 on the two real tokens, 0 on padding
    loss, _ = policy_loss(logp, old, adv, mask, level="sequence", aggregation="seq_mean", clip_high=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(-math.sqrt(2))
    assert torch.allclose(logp.grad, torch.tensor([[-math.sqrt(2) / 2, -math.sqrt(2) / 2, 0.0]], dtype=torch.float64))


def test_gspo_token_mean_weights_sequences_by_length():
    # ratio 1: L_i = -A_i on every token. A = [1, -2], lengths 3 and 1:
    # token_mean = (3 * -1 + 1 * 2) / 4 = -0.25, same as token level when all ratios are 1
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, _ = policy_loss(logp, logp.clone(), torch.tensor([1.0, -2.0]), mask, level="sequence")
    assert loss.item() == pytest.approx(-0.25)


# ----------------------------------------------------------------- masks, weights, metrics


def test_all_zero_mask_rows_give_no_nan():
    # row 1 is fully masked and full of -inf/inf padding; only row 0 (ratio 1, A=1, L=-1) counts
    logp = torch.tensor([[0.0, 0.0], [float("inf"), 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0], [float("-inf"), float("nan")]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    for agg in AGGREGATIONS.names():
        loss, m = policy_loss(logp, old, torch.tensor([1.0, 5.0]), mask, aggregation=agg, max_tokens=2)
        loss.backward()
        assert torch.isfinite(logp.grad).all(), agg
        assert m["num_tokens"] == 2.0
        logp.grad = None
    # token_mean: (-1 - 1) / 2 = -1; seq_mean: -2/2 over 1 non-empty sequence = -1
    assert policy_loss(logp, old, torch.tensor([1.0, 5.0]), mask)[0].item() == pytest.approx(-1.0)
    assert policy_loss(logp, old, torch.tensor([1.0, 5.0]), mask, aggregation="seq_mean")[0].item() == pytest.approx(-1.0)


def test_fully_masked_batch_gives_zero_loss():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, m = policy_loss(logp, logp.detach(), torch.ones(2), torch.zeros(2, 3), aggregation="seq_mean")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(2, 3))
    assert m["num_tokens"] == 0.0 and m["ratio_mean"] == 0.0 and m["clip_frac_low"] == 0.0


def test_token_weights_scale_the_per_token_loss():
    # ratio 1, A = 1 -> L = -1 on both tokens; weights [0.5, 1.0] -> (-0.5 - 1) / 2 = -0.75
    # padding weight inf on the masked token must not leak
    logp = torch.zeros(1, 3, requires_grad=True)
    w = torch.tensor([[0.5, 1.0, float("inf")]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, _ = policy_loss(logp, logp.detach(), torch.ones(1), mask, token_weights=w)
    loss.backward()
    assert loss.item() == pytest.approx(-0.75)
    # dL/dlogp_t = -A * ratio * w_t / 2 tokens = [-0.25, -0.5, 0]
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.5, 0.0]]))


def test_metrics_counts_and_fractions():
    # tokens: ratio 1.5 A=+1 (high clip), ratio 0.5 A=-1 (low clip), ratio 1.0 A=+1, padding
    logp = torch.tensor([[LN(1.5)], [LN(0.5)], [0.0], [9.0]])
    old = torch.zeros(4, 1)
    adv = torch.tensor([1.0, -1.0, 1.0, 1.0])
    mask = torch.tensor([[1.0], [1.0], [1.0], [0.0]])
    _, m = policy_loss(logp, old, adv, mask)
    assert m["num_tokens"] == 3.0
    assert m["clip_low_count"] == 1.0 and m["clip_frac_low"] == pytest.approx(1 / 3)
    assert m["clip_high_count"] == 1.0 and m["clip_frac_high"] == pytest.approx(1 / 3)
    # ratio_mean = (1.5 + 0.5 + 1.0) / 3 = 1.0; max 1.5 (padding ratio e^9 ignored)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["ratio_max"] == pytest.approx(1.5)
    # loss = (-1.2 + 0.8 - 1.0) / 3 = -0.46667
    assert m["loss"] == pytest.approx(-1.4 / 3)


def test_combine_loss_metrics_sums_counts():
    a = {"num_tokens": 3.0, "clip_low_count": 1.0, "clip_high_count": 0.0, "ratio_sum": 3.0, "ratio_max": 1.5, "loss": -0.2}
    b = {"num_tokens": 1.0, "clip_low_count": 0.0, "clip_high_count": 1.0, "ratio_sum": 2.0, "ratio_max": 2.0, "loss": -0.1}
    m = combine_loss_metrics([a, b])
    # 1/4 low, 1/4 high, ratio_mean 5/4, max 2.0, loss -0.3
    assert m["clip_frac_low"] == 0.25 and m["clip_frac_high"] == 0.25
    assert m["ratio_mean"] == 1.25 and m["ratio_max"] == 2.0 and m["loss"] == pytest.approx(-0.3)


def test_shape_errors_name_the_argument():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages must be \\[N\\] = \\[2\\]"):
        policy_loss(x, x, torch.zeros(3), x)
    with pytest.raises(ValueError, match="mask shape \\(2, 2\\) != logp shape \\(2, 3\\)"):
        policy_loss(x, x, torch.zeros(2), torch.zeros(2, 2))


# ----------------------------------------------------------------- gradient accumulation invariance


def _tiny_model_batch(n=8, t=6, d=4, v=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, t, d, generator=g, dtype=torch.float64)  # [N, T, D]
    tokens = torch.randint(v, (n, t), generator=g)  # [N, T]
    weight0 = torch.randn(d, v, generator=g, dtype=torch.float64)  # [D, V]
    # old log-probs from slightly different weights so ratios spread over both clip edges
    old_w = weight0 + 0.5 * torch.randn(d, v, generator=g, dtype=torch.float64)
    old = torch.log_softmax(feats @ old_w, -1).gather(-1, tokens[..., None])[..., 0]  # [N, T]
    lengths = torch.tensor([6, 1, 3, 6, 2, 0, 5, 4])  # one fully masked row
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()  # [N, T]
    adv = torch.randn(n, generator=g, dtype=torch.float64)  # [N]
    return feats, tokens, weight0, old, mask, adv


def _grad(aggregation, chunk, use_totals=True, level="token"):
    feats, tokens, weight0, old, mask, adv = _tiny_model_batch()
    weight = weight0.clone().requires_grad_(True)
    totals = loss_normalizers(mask) if use_totals else {}
    metrics = []
    for s in range(0, feats.shape[0], chunk):
        sl = slice(s, s + chunk)
        logp = torch.log_softmax(feats[sl] @ weight, -1).gather(-1, tokens[sl][..., None])[..., 0]  # [n, T]
        loss, m = policy_loss(
            logp, old[sl], adv[sl], mask[sl], aggregation=aggregation, max_tokens=6, level=level, **totals
        )
        loss.backward()
        metrics.append(m)
    return weight.grad, combine_loss_metrics(metrics)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "seq_sum_const"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_micro_batches_with_totals_match_full_batch_gradient(aggregation, level):
    full, m_full = _grad(aggregation, chunk=8, level=level)
    micro, m_micro = _grad(aggregation, chunk=2, level=level)
    assert full.abs().sum() > 0  # a real gradient
    assert torch.allclose(full, micro, rtol=1e-10, atol=1e-12)
    assert m_micro["loss"] == pytest.approx(m_full["loss"], rel=1e-10)
    assert m_micro["clip_frac_high"] == m_full["clip_frac_high"]


def test_micro_batches_without_totals_differ():
    # Dividing each micro-batch by its own token count weights short micro-batches up:
    # shows the invariance test above can fail.
    full, _ = _grad("token_mean", chunk=8)
    micro, _ = _grad("token_mean", chunk=2, use_totals=False)
    assert not torch.allclose(full, micro, rtol=1e-3)


def test_loss_normalizers_count_nonempty_sequences():
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    # 3 tokens; 2 sequences with any token
    assert loss_normalizers(mask) == {"total_tokens": 3.0, "total_seqs": 2.0}
