"""The transformers engine: its sampling log-probs are the policy's log-probs of the sampled tokens."""

from __future__ import annotations

import pytest
import torch

from rlkit.learner import token_logprobs
from rlkit.rollout.hf import HFEngine
from rlkit.types import FINISH_BUDGET, GenerationRequest, SamplingParams, pack_rollouts


@pytest.fixture(scope="module")
def engine(random_tiny_model):
    return HFEngine(random_tiny_model, seed=0)


def _requests(engine):
    tok = engine.tokenizer
    # different prompt lengths, so left padding and position ids are exercised
    return [GenerationRequest(tok("What is 1 plus 2 ?")["input_ids"], n=3),
            GenerationRequest(tok("What is 12 plus 7 so the answer is ?")["input_ids"], n=2)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_fresh_forward(engine, temperature):
    rollouts = engine.generate(_requests(engine), SamplingParams(max_new_tokens=16, temperature=temperature, seed=1))
    assert len(rollouts) == 5  # 3 + 2 samples, in request order
    batch = pack_rollouts(rollouts, engine.pad_id)
    with torch.no_grad():
        fresh, _, _ = token_logprobs(engine.model, batch.input_ids, batch.attention_mask, temperature)  # [N, L-1]
    mask = batch.loss_mask.bool()
    assert mask.sum() == sum(r.length for r in rollouts)
    # same weights, same tokens: batched+cached+left-padded sampling vs one right-padded forward
    torch.testing.assert_close(fresh[mask], batch.old_logp[mask], atol=1e-4, rtol=0)


def test_greedy_is_deterministic_and_group_members_agree(engine):
    rollouts = engine.generate(_requests(engine), SamplingParams(max_new_tokens=12, temperature=0.0))
    # greedy: the 3 samples of the first prompt are the same sequence
    assert rollouts[0].completion_ids == rollouts[1].completion_ids == rollouts[2].completion_ids
    again = engine.generate(_requests(engine), SamplingParams(max_new_tokens=12, temperature=0.0))
    assert [r.completion_ids for r in again] == [r.completion_ids for r in rollouts]


def test_budget_stops_with_budget_reason_and_versions_are_stamped(engine):
    engine.version = 5
    try:
        rollouts = engine.generate(_requests(engine), SamplingParams(max_new_tokens=40, token_budget=3, seed=0))
    finally:
        engine.version = 0
    for r in rollouts:
        assert r.length <= 3
        assert r.finish_reason in (FINISH_BUDGET, "stop")
        assert r.versions == [5] * r.length


def test_prompt_longer_than_context_is_refused_naming_sizes(engine):
    long_prompt = [engine.tokenizer.convert_tokens_to_ids("1")] * 120  # context is 128 positions
    with pytest.raises(ValueError, match="exceeds the model context of 128"):
        engine.generate([GenerationRequest(long_prompt)], SamplingParams(max_new_tokens=16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_engine_logprobs_equal_fresh_forward(random_tiny_model):
    engine = HFEngine(random_tiny_model, device="cuda", seed=0)
    rollouts = engine.generate(_requests(engine), SamplingParams(max_new_tokens=16, seed=1))
    batch = pack_rollouts(rollouts, engine.pad_id)
    with torch.no_grad():
        fresh, _, _ = token_logprobs(engine.model, batch.input_ids.cuda(), batch.attention_mask.cuda(), 1.0)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(fresh.cpu()[mask], batch.old_logp[mask], atol=1e-3, rtol=0)
