"""SFT and DPO numerics and the supervised learner on a tiny real model."""

from __future__ import annotations

import math

import pytest
import torch

from rlkit.sft.config import OptimConfig
from rlkit.sft.data import collate, tokenize_examples
from rlkit.sft.losses import dpo_loss, sequence_logprob, sft_loss
from rlkit.sft.trainer import SupervisedLearner, lr_at


def test_sft_loss_is_the_token_mean_nll_of_completion_tokens():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.125], [0.5, 0.5, 1.0]]))  # [2, 3]
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # 3 completion tokens in the batch
    # -(ln .25 + ln .125 + ln .5) / 3 = (1.3863 + 2.0794 + 0.6931) / 3 = 1.3863
    assert sft_loss(logp, mask, 3.0).item() == pytest.approx((math.log(4) + math.log(8) + math.log(2)) / 3)
    # micro-batches normalised by the whole batch's tokens add up to the full-batch loss
    parts = sft_loss(logp[:1], mask[:1], 3.0) + sft_loss(logp[1:], mask[1:], 3.0)
    assert parts.item() == pytest.approx(sft_loss(logp, mask, 3.0).item())
    assert sequence_logprob(logp, mask).tolist() == pytest.approx([math.log(0.25 * 0.125), math.log(0.5)])
    # per-token mean: (ln .25 + ln .125) / 2 and ln .5 / 1
    assert sequence_logprob(logp, mask, mean=True).tolist() == pytest.approx([math.log(0.25 * 0.125) / 2,
                                                                             math.log(0.5)])


def test_dpo_loss_by_hand():
    # pair 1: policy - ref on chosen = -1 - (-2) = 1, on rejected = -3 - (-2) = -1; margin = 0.5 * (1 - -1) = 1.0
    # pair 2: chosen -4 - (-3) = -1, rejected -1 - (-2) = 1; margin = 0.5 * (-1 - 1) = -1.0
    loss, m = dpo_loss(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -3.0]),
                       torch.tensor([-2.0, -2.0]), beta=0.5)
    # -log sigmoid(1) = log(1 + e^-1) = 0.31326; -log sigmoid(-1) = log(1 + e) = 1.31326; mean 0.81326
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.81326, abs=1e-5)
    assert m["dpo/margin"] == pytest.approx(0.0) and m["dpo/accuracy"] == 0.5
    assert m["dpo/chosen_reward"] == pytest.approx((0.5 * 1 + 0.5 * -1) / 2)
    # at the start of training policy == reference: every margin is 0 and the loss is log 2
    same = torch.tensor([-5.0, -7.0])
    assert dpo_loss(same, same - 1, same, same - 1, beta=0.1)[0].item() == pytest.approx(math.log(2))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4) and lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(10, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(100, cfg, 100) == pytest.approx(1e-4)


def _examples(model_path):
    from rlkit.models import load_tokenizer

    tok = load_tokenizer(model_path)
    rows = [{"prompt": f"What is {a} plus {b} ?", "completion": f"the answer is {a + b}"} for a, b in
            ((1, 2), (3, 4), (2, 2), (0, 5))]
    return tok, tokenize_examples(rows, tok, fmt="prompt_completion", template="plain")


def test_sft_on_a_tiny_set_drives_the_loss_near_zero(random_tiny_model):
    tok, examples = _examples(random_tiny_model)
    batch = collate(examples, tok.pad_token_id)
    cfg = OptimConfig(lr=1e-2, min_lr_ratio=1.0, batch_size=4, micro_batch_size=2, threads=1, router_aux_coef=0.0)
    learner = SupervisedLearner(random_tiny_model, cfg, total_steps=80)
    first = learner.sft_step(batch)["sft/loss"]
    for _ in range(79):
        last = learner.sft_step(batch)["sft/loss"]
    assert first > 1.0  # a random model: about log(vocab size) per token
    assert last < 0.05, (first, last)


def test_micro_batches_give_the_full_batch_gradient(random_tiny_model):
    tok, examples = _examples(random_tiny_model)
    batch = collate(examples, tok.pad_token_id)
    grads = []
    for micro in (4, 1):
        cfg = OptimConfig(lr=0.0, batch_size=4, micro_batch_size=micro, threads=1, router_aux_coef=0.0,
                          max_grad_norm=0.0)
        learner = SupervisedLearner(random_tiny_model, cfg, total_steps=1)
        learner.optimizer.step = lambda: None  # keep the gradient for inspection
        learner.optimizer.zero_grad = lambda set_to_none=True: None
        learner.sft_step(batch)
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_dpo_steps_raise_the_chosen_over_the_rejected(random_tiny_model):
    tok, examples = _examples(random_tiny_model)
    chosen = collate(examples[:2], tok.pad_token_id)
    rejected = collate(examples[2:], tok.pad_token_id)
    cfg = OptimConfig(lr=3e-3, min_lr_ratio=1.0, batch_size=2, micro_batch_size=1, threads=1)
    learner = SupervisedLearner(random_tiny_model, cfg, total_steps=20, reference=True)
    ref_c = learner.sequence_logprobs(chosen, reference=True)
    ref_r = learner.sequence_logprobs(rejected, reference=True)
    assert torch.allclose(ref_c, learner.sequence_logprobs(chosen))  # the reference is the starting policy
    first = learner.dpo_step(chosen, rejected, ref_c, ref_r, beta=0.1)
    assert first["dpo/loss"] == pytest.approx(math.log(2), abs=1e-4)
    for _ in range(19):
        last = learner.dpo_step(chosen, rejected, ref_c, ref_r, beta=0.1)
    assert last["dpo/margin"] > 0.5 and last["dpo/loss"] < first["dpo/loss"]


def test_dpo_nll_term_adds_the_chosen_token_mean_nll(random_tiny_model):
    tok, examples = _examples(random_tiny_model)
    chosen, rejected = collate(examples[:2], tok.pad_token_id), collate(examples[2:], tok.pad_token_id)
    out = {}
    for coef in (0.0, 0.5):
        cfg = OptimConfig(lr=0.0, batch_size=2, micro_batch_size=1, threads=1, router_aux_coef=0.0, max_grad_norm=0.0)
        learner = SupervisedLearner(random_tiny_model, cfg, total_steps=1, reference=True)
        ref_c = learner.sequence_logprobs(chosen, reference=True, mean=True)
        ref_r = learner.sequence_logprobs(rejected, reference=True, mean=True)
        expected_nll = -float(learner.sequence_logprobs(chosen).sum() / chosen.loss_mask.sum())
        out[coef] = learner.dpo_step(chosen, rejected, ref_c, ref_r, beta=2.0, nll_coef=coef, length_normalize=True)
        assert out[coef]["dpo/chosen_nll"] == pytest.approx(expected_nll, rel=1e-5)
    # lr 0: the policy is the reference, so the DPO part is log 2 either way; the NLL term changes the gradient
    assert out[0.0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert out[0.5]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert out[0.5]["grad_norm"] != pytest.approx(out[0.0]["grad_norm"], rel=0.05)
