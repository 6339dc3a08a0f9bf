import math

import pytest
import torch

from rlkit.algo import (
    entropy_from_logits,
    kimi_mirror_descent_penalty,
    kl_penalty,
    masked_mean,
    truncated_importance_weights,
)

LN = math.log


def test_k1_k2_k3_by_hand():
    # pi = 0.5, pi_ref = 0.25
    logp, ref = torch.tensor([[LN(0.5)]]), torch.tensor([[LN(0.25)]])
    # k1 = ln 0.5 - ln 0.25 = ln 2 = 0.69315
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.69315, abs=1e-5)
    # k2 = (ln 2)^2 / 2 = 0.24023
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.24023, abs=1e-5)
    # k3: d = ln(0.25/0.5) = -0.69315 -> e^d - d - 1 = 0.5 + 0.69315 - 1 = 0.19315
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.19315, abs=1e-5)


def test_k3_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(4, 7, generator=g) * 5, -torch.rand(4, 7, generator=g) * 5
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert torch.equal(kl_penalty(logp, logp.clone(), "k3"), torch.zeros(4, 7))


def test_k3_stays_finite_when_reference_is_far_more_likely():
    logp = torch.tensor([[-200.0]], requires_grad=True)
    kl = kl_penalty(logp, torch.tensor([[0.0]]), "k3")
    kl.backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logp.grad).all()


def test_k3_keeps_pulling_the_most_divergent_tokens_back():
    # d = ref - logp = 25 and 30: beyond d = 20, exp(d) continues as its tangent e^20 (1 + d - 20),
    # so the value is finite and the gradient is e^20 - 1 (not the 0 a clamp would give)
    logp = torch.tensor([[-25.0, -30.0, -1.0]], requires_grad=True)
    ref = torch.zeros(1, 3)
    kl = kl_penalty(logp, ref, "k3")
    e20 = math.exp(20.0)
    expected = [e20 * (1 + 5) - 25 - 1, e20 * (1 + 10) - 30 - 1, math.exp(1.0) - 1 - 1]
    torch.testing.assert_close(kl[0].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    kl.sum().backward()
    # d(k3)/d(logp) = -(exp'(d) - 1): -(e^20 - 1) on both far tokens, -(e - 1) on the near one
    torch.testing.assert_close(logp.grad[0].double(), torch.tensor([-(e20 - 1), -(e20 - 1), -(math.e - 1)],
                                                                   dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # continuous at the switch: across d = 20 +- 1e-6 the value moves by the slope e^20 times 2e-6, no jump
    below, above = (kl_penalty(torch.tensor([[-x]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                               "k3").item() for x in (20.0 - 1e-6, 20.0 + 1e-6))
    assert abs(above - below) == pytest.approx(e20 * 2e-6, rel=1e-3)


def test_kl_gradient_does_not_reach_reference():
    logp, ref = torch.zeros(1, 2, requires_grad=True), torch.ones(1, 2, requires_grad=True)
    kl_penalty(logp, ref, "k3").sum().backward()
    assert ref.grad is None


def test_unknown_kl_kind():
    with pytest.raises(KeyError, match="unknown KL estimator 'k4'.*k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_kimi_mirror_descent_penalty_by_hand():
    # tau 0.2, log ratio ln 2: 0.1 * 0.69315^2 = 0.048045
    p = kimi_mirror_descent_penalty(torch.tensor([[LN(0.5)]]), torch.tensor([[LN(0.25)]]), tau=0.2)
    assert p.item() == pytest.approx(0.048045, abs=1e-6)


def test_entropy_by_hand():
    # uniform over 4 -> ln 4 = 1.38629; p = [1/4, 3/4] (logits [0, ln 3]) ->
    # -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.34657 + 0.21576 = 0.56233
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, LN(3.0), -1e4, -1e4]])
    h = entropy_from_logits(logits)
    assert h.shape == (2,)
    assert torch.allclose(h, torch.tensor([1.38629, 0.56233]), atol=1e-5)


def test_entropy_matches_definition_on_random_logits():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(1))
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(logp.exp() * logp).sum(-1), atol=1e-6)


def test_masked_mean():
    x = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # (1 + 2) / 2 = 1.5; with total 4: 3 / 4 = 0.75; nothing masked in: 0
    assert masked_mean(x, mask).item() == 1.5
    assert masked_mean(x, mask, total=4.0).item() == 0.75
    assert masked_mean(x, torch.zeros(4)).item() == 0.0


def test_truncated_importance_weights():
    # prox/behaviour = 3 -> capped at 2; 0.5 -> 0.5; 1 -> 1
    prox = torch.tensor([[LN(3.0), LN(0.5), 0.0]], requires_grad=True)
    w = truncated_importance_weights(prox, torch.zeros(1, 3), cap=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0]]))
    assert not w.requires_grad


def test_truncated_importance_weights_validates_cap():
    with pytest.raises(ValueError, match="cap must be > 0, got 0"):
        truncated_importance_weights(torch.zeros(1, 1), torch.zeros(1, 1), cap=0)
