"""The transformers engine: its sampling log-probs are the policy's log-probs of the sampled tokens."""

from __future__ import annotations

import pytest
import torch

from rlkit.forward import token_logprobs
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
@pytest.mark.requires("cuda")
def test_cuda_engine_logprobs_equal_fresh_forward(random_tiny_model):
    engine = HFEngine(random_tiny_model, device="cuda", seed=0)
    rollouts = engine.generate(_requests(engine), SamplingParams(max_new_tokens=16, seed=1))
    batch = pack_rollouts(rollouts, engine.pad_id)
    with torch.no_grad():
        fresh, _, _ = token_logprobs(engine.model, batch.input_ids.cuda(), batch.attention_mask.cuda(), 1.0)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(fresh.cpu()[mask], batch.old_logp[mask], atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- caps, kept caches, compaction


def _forward_shapes(engine):
    """Record (input_ids shape, attention_mask width) of every model forward; returns (list, hook handle)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((tuple(kwargs["input_ids"].shape), kwargs["attention_mask"].shape[1]))

    return seen, engine.model.register_forward_pre_hook(hook, with_kwargs=True)


def test_per_sample_caps_share_one_prefill_and_end_each_sample_at_its_cap(engine):
    prompt = engine.tokenizer("What is 1 plus 2 ?")["input_ids"]
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    (free,) = engine.generate([GenerationRequest(prompt)], greedy)
    assert free.length > 5 and engine.eos_ids[0] not in free.completion_ids[:5]  # caps, not EOS, end them
    seen, handle = _forward_shapes(engine)
    try:
        shared = engine.generate([GenerationRequest(prompt, n=3, meta={"max_new_tokens": [2, 5, 3]})], greedy)
    finally:
        handle.remove()
    assert seen[0][0] == (1, len(prompt))  # one prefill row for the three samples
    assert [(r.length, r.finish_reason) for r in shared] == [(2, "length"), (5, "length"), (3, "length")]
    assert [r.completion_ids for r in shared] == [free.completion_ids[:n] for n in (2, 5, 3)]
    with pytest.raises(ValueError, match="lists 2 caps for n=3"):
        engine.generate([GenerationRequest(prompt, n=3, meta={"max_new_tokens": [2, 5]})], greedy)


def test_a_budget_stop_resumes_from_its_kept_cache_only_at_the_same_weights(engine):
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0, token_budget=5)
    first = engine.generate(_requests(engine), greedy)
    assert {r.finish_reason for r in first} == {FINISH_BUDGET}
    resume = [GenerationRequest(r.prompt_ids, prefix_ids=r.completion_ids, prefix_logprobs=r.logprobs,
                                prefix_versions=r.versions) for r in first]
    seen, handle = _forward_shapes(engine)
    try:
        kept = engine.generate(resume, greedy)  # same version: the kept caches are used
        assert [r.completion_ids for r in engine.generate(_requests(engine), greedy)] == \
            [r.completion_ids for r in first]  # the same budget stops, kept again
        engine.load_weights(engine.state_dict(), engine.version)  # a weight sync, even of the same numbers
        calls = len(seen)
        again = engine.generate(resume, greedy)
    finally:
        handle.remove()
    # with kept caches the first forward is the 5 contexts' last tokens; after the sync a prefill
    # of whole contexts (one bucket: they are 11 and 16 tokens long)
    assert seen[0][0] == (5, 1)
    assert seen[calls][0] == (5, max(len(r.prompt_ids) + r.length for r in first))
    uncut = engine.generate(_requests(engine), SamplingParams(max_new_tokens=10, temperature=0.0))
    for a, b, ref in zip(kept, again, uncut):
        assert a.completion_ids == b.completion_ids == ref.completion_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(ref.logprobs), atol=1e-4, rtol=0)


def test_new_weights_never_attend_to_kept_keys_of_old_ones(engine):
    original = engine.state_dict()
    sampling = SamplingParams(max_new_tokens=16, token_budget=6, seed=3)
    try:
        first = engine.generate(_requests(engine), sampling)
        noisy = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in original.items()}
        engine.load_weights(noisy, engine.version + 1)
        resume = [GenerationRequest(r.prompt_ids, prefix_ids=r.completion_ids, prefix_logprobs=r.logprobs,
                                    prefix_versions=r.versions) for r in first if r.finish_reason == FINISH_BUDGET]
        assert len(resume) >= 3
        resumed = engine.generate(resume, sampling)
        batch = pack_rollouts(resumed, engine.pad_id)
        with torch.no_grad():
            fresh, _, _ = token_logprobs(engine.model, batch.input_ids, batch.attention_mask, 1.0)  # [N, L-1]
    finally:
        engine.load_weights(original, 0)
    new = batch.loss_mask.bool() & (batch.versions == 1)  # tokens sampled by the new weights
    assert new.sum() > 0
    # these log-probs come from the new weights over the whole context: a kept cache of the old
    # weights would be off by far more than the tolerance (weights moved by 0.05 per entry)
    torch.testing.assert_close(fresh[new], batch.old_logp[new], atol=1e-4, rtol=0)


def test_short_rows_lose_the_long_rows_padding_once_they_end_and_sample_as_alone(engine):
    tok = engine.tokenizer
    fresh = GenerationRequest(tok("What is 1 plus 2 ?")["input_ids"], meta={"max_new_tokens": 10})
    # a resumed sample with 40 tokens so far and 2 to go, beside a fresh prompt with 10 to go
    long = GenerationRequest(tok("What is 12 plus 7 ?")["input_ids"], prefix_ids=[tok.convert_tokens_to_ids("3")] * 40,
                             prefix_logprobs=[-1.0] * 40, prefix_versions=[0] * 40)
    greedy = SamplingParams(max_new_tokens=42, temperature=0.0)
    seen, handle = _forward_shapes(engine)
    try:
        together = engine.generate([long, fresh], greedy)
    finally:
        handle.remove()
    (alone,) = engine.generate([fresh], greedy)
    assert together[0].length == 42 and together[1].length == 10
    long_ctx = len(long.prompt_ids) + 40
    # decode steps: one with both rows over the long context, then the fresh row alone over its
    # own columns (its prompt and the tokens so far), not the 40 columns of padding in front
    decode = [(shape[0], w) for shape, w in seen if shape[1] == 1]
    assert decode[0] == (2, long_ctx + 1)
    assert decode[1:] == [(1, len(fresh.prompt_ids) + j) for j in range(2, 10)]
    assert together[1].completion_ids == alone.completion_ids
    torch.testing.assert_close(torch.tensor(together[1].logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0)


def test_fill_holes_and_the_slab_cache_select_rows_like_indexing():
    from rlkit.rollout.hf import _fill_holes, _SlabLayer

    assert _fill_holes(5, [1, 2]) == [0, 3, 4]  # holes 1 and 2 take rows 3 and 4
    assert _fill_holes(6, [0, 5]) == [4, 1, 2, 3]  # row 5 left, so hole 0 takes row 4
    assert _fill_holes(3, []) == [0, 1, 2] and _fill_holes(2, [0, 1]) == []
    keys = torch.arange(6 * 2 * 4 * 3, dtype=torch.float32).view(6, 2, 4, 3)  # [B, H, C, D]
    for indices in ([4, 1, 2, 3], [0, 2], [2, 0], [0, 0, 1, 1, 1, 1, 1]):  # in place, in place, gather, gather
        layer = _SlabLayer(keys.clone(), -keys.clone(), 3)
        layer.batch_select_indices(torch.tensor(indices))
        assert torch.equal(layer.keys, keys[indices, :, :3]) and torch.equal(layer.values, -keys[indices, :, :3])
        k, _ = layer.update(torch.ones(len(indices), 2, 2, 3), torch.ones(len(indices), 2, 2, 3))  # grows past C
        assert k.shape[2] == 5 and torch.equal(k[:, :, 3:], torch.ones(len(indices), 2, 2, 3))


def test_sleep_drops_kept_keys_and_values_and_sampling_goes_on(engine):
    requests = _requests(engine)
    engine.generate(requests, SamplingParams(max_new_tokens=20, token_budget=3, seed=0))
    assert engine._kept  # budget-stopped samples left their keys/values
    engine.sleep()
    assert not engine._kept
    engine.wake_up()
    assert len(engine.generate(requests, SamplingParams(max_new_tokens=5, seed=0))) == 5
