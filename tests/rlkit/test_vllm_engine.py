"""The vLLM engine against the engine contract, under a real local Ray.

Every engine runs in a RolloutActor (as in the loop); `_on_engine` runs a function on the engine
inside its actor (Ray's `__ray_call__`) for what the actor does not expose. The references are a
transformers forward of the same weights scored with `rlkit.algo.logprobs` (the learner's
definition) and the learner itself (`LearnerGroup.logprobs`).

vLLM's CPU attention has no kernel for head_dim 16, the random model of tests/conftest.py, so
`moe32` is that model with head_dim 32.
"""

from __future__ import annotations

import random

import pytest
import ray
import torch

from rlkit.actors import LearnerGroup, RolloutGroup, init_ray
from rlkit.algo.logprobs import target_logprobs
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.rollout.hf import HFEngine
from rlkit.rollout.vllm import CHECKED_VLLM_VERSION, VLLMEngine
from rlkit.types import FINISH_BUDGET, FINISH_LENGTH, FINISH_REPEAT, FINISH_STOP, GenerationRequest, SamplingParams
from rlkit.types import pack_rollouts
from rlkit.weight_sync import sync_weights

pytestmark = pytest.mark.requires("vllm")
SHIPPED = "data/models/tiny-moe"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ray_local():
    init_ray(num_cpus=4)  # logical CPUs: the engines and a learner are placed at once (they take turns)
    yield
    ray.shutdown()


def _build(path, base, **changes):
    """A random model: `base`'s config (and tokenizer) with `changes`, written to `path`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    cfg = AutoConfig.from_pretrained(base)
    for k, v in changes.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig.from_pretrained(base)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return str(path)


def _build_dense(path, base):
    """A random Qwen2-style dense model with a tied head, in `base`'s vocabulary."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(base)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig.from_pretrained(base)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def moe32(random_tiny_model, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("moe32"), random_tiny_model, head_dim=32)


@pytest.fixture(scope="module")
def engine(ray_local, moe32):
    return RolloutGroup(1, "vllm", {"model_path": moe32, "seed": 0})


@pytest.fixture(scope="module")
def hf_moe32(moe32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(moe32, dtype=torch.float32).eval()


def _on_engine(group, fn, *args):
    return ray.get(group.actors[0].__ray_call__.remote(lambda actor, *a: fn(actor.engine, *a), *args))


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _reference_logprobs(model, rollouts, temperature, top_p):
    """Per rollout: the definition's log-prob of each completion token under `model` ([C] each)."""
    out = []
    for r in rollouts:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])  # [1, P+C]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1].float()  # [C, V]
        out.append(target_logprobs(logits, ids[0, len(r.prompt_ids) :], temperature, top_p))  # [C]
    return out


def _max_gap(model, rollouts, temperature, top_p):
    refs = _reference_logprobs(model, rollouts, temperature, top_p)
    return max(float((ref - torch.tensor(r.logprobs)).abs().max()) for ref, r in zip(refs, rollouts) if r.length)


def _requests(tok):
    return [GenerationRequest(tok("What is 1 plus 2 ?")["input_ids"], n=3, meta={"id": "a"}),
            GenerationRequest(tok("What is 12 plus 7 so the answer is ?")["input_ids"], n=2, meta={"id": "b"})]


# ----------------------------------------------------------------------------- sampling log-probs
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8), (0.0, 1.0)])
def test_sampling_logprobs_are_those_of_the_distribution_sampled(engine, hf_moe32, moe32, temperature, top_p):
    rollouts = engine.generate(_requests(_tok(moe32)),
                               SamplingParams(max_new_tokens=16, temperature=temperature, top_p=top_p, seed=1))
    assert len(rollouts) == 5 and sum(r.length for r in rollouts) > 20
    # softmax(logits / T) in the top-p nucleus, renormalised; greedy under T = 1 (rlkit.algo.logprobs)
    scored_t, scored_p = (temperature, top_p) if temperature > 0 else (1.0, 1.0)
    assert _max_gap(hf_moe32, rollouts, scored_t, scored_p) < 2e-4
    if (temperature, top_p) == (0.7, 0.8):
        # the check can fail: the model's own log-probs (vLLM's default "raw_logprobs") are far from these
        assert _max_gap(hf_moe32, rollouts, 1.0, 1.0) > 0.05


def test_samples_come_in_request_order_with_their_caps_meta_and_version(engine, moe32):
    tok = _tok(moe32)
    requests = _requests(tok)
    requests[1].meta["max_new_tokens"] = [2, 12]  # one cap per sample of request b
    rollouts = engine.generate(requests, SamplingParams(max_new_tokens=20, seed=2))
    assert [r.meta["id"] for r in rollouts] == ["a", "a", "a", "b", "b"]
    assert all(r.prompt_ids == requests[0].prompt_ids for r in rollouts[:3])
    assert all(r.prompt_ids == requests[1].prompt_ids for r in rollouts[3:])
    assert rollouts[3].length <= 2 and rollouts[4].length <= 12 and all(r.length <= 20 for r in rollouts)
    for r, cap in zip(rollouts, [20, 20, 20, 2, 12]):
        assert len(r.logprobs) == len(r.versions) == r.length
        assert r.versions == [0] * r.length
        if r.finish_reason == FINISH_STOP:
            assert r.completion_ids[-1] == tok.eos_token_id and r.length <= cap
        else:
            assert r.finish_reason == FINISH_LENGTH and r.length == cap
        assert r.text == tok.decode([t for t in r.completion_ids if t != tok.eos_token_id], skip_special_tokens=True)
    # the samples of one request are different draws
    assert len({tuple(r.completion_ids) for r in rollouts[:3]}) > 1


def test_prompt_longer_than_context_is_refused_naming_the_request(engine, moe32):
    tok = _tok(moe32)
    long_prompt = [tok.convert_tokens_to_ids("1")] * 120  # context: 128 positions
    with pytest.raises(Exception, match="request 1: prompt of 120 tokens .* exceeds the model context of 128"):
        engine.generate([GenerationRequest([5, 6]), GenerationRequest(long_prompt)], SamplingParams(max_new_tokens=16))


# ----------------------------------------------------------------------------- partial rollouts
def test_budget_cut_and_resumed_greedy_equals_uncut_with_versions_per_segment(engine, hf_moe32, moe32):
    tok = _tok(moe32)
    prompts = [tok("What is 2 plus 3 ?")["input_ids"], tok("What is 11 plus 9 so ?")["input_ids"]]
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    uncut = engine.generate([GenerationRequest(p) for p in prompts], greedy)
    assert all(r.length > 10 for r in uncut)  # long enough to be cut several times

    state_ref = ray.put({k: v.clone() for k, v in hf_moe32.state_dict().items()})
    pending = [GenerationRequest(p) for p in prompts]
    done, version = {}, 0
    budget = SamplingParams(max_new_tokens=24, temperature=0.0, token_budget=5)
    while pending:
        segment = engine.generate(pending, budget)
        assert all(r.length - len(q.prefix_ids) <= 5 for q, r in zip(pending, segment))
        version += 1
        engine.load_weights(state_ref, version)  # a sync between segments, of the same weights
        still = []
        for r in segment:
            if r.finish_reason == FINISH_BUDGET:
                still.append(GenerationRequest(r.prompt_ids, prefix_ids=r.completion_ids, prefix_logprobs=r.logprobs,
                                               prefix_versions=r.versions))
            else:
                done[tuple(r.prompt_ids)] = r
        pending = still
    engine.load_weights(state_ref, 0)
    for whole in uncut:
        cut = done[tuple(whole.prompt_ids)]
        assert cut.completion_ids == whole.completion_ids
        assert cut.finish_reason == whole.finish_reason
        torch.testing.assert_close(torch.tensor(cut.logprobs), torch.tensor(whole.logprobs), atol=1e-4, rtol=0)
        # segment k (5 tokens each) was sampled by the weights of version k
        assert cut.versions == [j // 5 for j in range(cut.length)]


def test_caps_and_budgets_give_the_engine_contract_finish_reasons(engine, moe32):
    tok = _tok(moe32)
    prompt = tok("What is 4 plus 4 ?")["input_ids"]
    at_cap = GenerationRequest(prompt, prefix_ids=[5, 6, 7], prefix_logprobs=[-1.0] * 3, prefix_versions=[0] * 3)
    rollouts = engine.generate([at_cap], SamplingParams(max_new_tokens=3, token_budget=4))
    # a prefix already at its cap is finished ("length"), never resumed as "budget" forever
    assert rollouts[0].finish_reason == FINISH_LENGTH and rollouts[0].completion_ids == [5, 6, 7]
    rollouts = engine.generate([GenerationRequest(prompt)], SamplingParams(max_new_tokens=8, token_budget=0))
    assert rollouts[0].finish_reason == FINISH_BUDGET and rollouts[0].length == 0
    capped = GenerationRequest(prompt, n=2, meta={"max_new_tokens": [3, 30]})
    rollouts = engine.generate([capped], SamplingParams(max_new_tokens=30, token_budget=5, temperature=0.0))
    # the cap ends sample 0 inside the budget: "length"; sample 1 stops at the budget
    assert rollouts[0].finish_reason == FINISH_LENGTH and rollouts[0].length == 3
    assert rollouts[1].finish_reason == FINISH_BUDGET and rollouts[1].length == 5


# ----------------------------------------------------------------------------- repeats
def test_repeat_cut_is_the_transformers_engine_rule():
    """`_repeat_end` (vLLM: cut after the fact) against `HFEngine._repeating` (checked per token)."""
    rng = random.Random(0)
    for ngram, window in [(1, 2), (1, 4), (2, 6), (3, 9)]:
        hf = type("Cfg", (), {"repeat_ngram": ngram, "repeat_window": window})()
        vl = type("Cfg", (), {"repeat_ngram": ngram, "repeat_window": window, "eos_ids": [1]})()
        for _ in range(300):
            prefix = [rng.choice([2, 3, 4]) for _ in range(rng.randrange(0, 5))]
            new = [rng.choice([1, 2, 3, 4]) if rng.random() < 0.3 else rng.choice([2, 3]) for _ in range(12)]
            expected = None
            for j in range(len(new)):  # the transformers engine's order: eos, then repeat, per sampled token
                if new[j] == 1:
                    break
                if HFEngine._repeating(hf, prefix, new[: j + 1]):
                    expected = j + 1
                    break
            assert VLLMEngine._repeat_end(vl, prefix, new) == expected, (ngram, window, prefix, new)


def test_repeat_detection_cuts_the_sample_where_the_transformers_engine_stops(engine, moe32):
    tok = _tok(moe32)
    requests = [GenerationRequest(tok(f"What is {a} plus {a} ?")["input_ids"]) for a in range(6)]
    greedy = SamplingParams(max_new_tokens=30, temperature=0.0)
    uncut = engine.generate(requests, greedy)

    def set_repeat(eng, ngram, window):
        eng.repeat_ngram, eng.repeat_window = ngram, window

    _on_engine(engine, set_repeat, 1, 2)  # two equal tokens in a row
    try:
        cut = engine.generate(requests, greedy)
    finally:
        _on_engine(engine, set_repeat, 0, 0)
    repeats = 0
    for whole, r in zip(uncut, cut):
        end = VLLMEngine._repeat_end(type("Cfg", (), {"repeat_ngram": 1, "repeat_window": 2,
                                                      "eos_ids": [tok.eos_token_id]})(), [], whole.completion_ids)
        if end is None:
            assert r.completion_ids == whole.completion_ids and r.finish_reason == whole.finish_reason
        else:
            repeats += 1
            assert r.finish_reason == FINISH_REPEAT and r.completion_ids == whole.completion_ids[:end]
            assert r.logprobs == whole.logprobs[:end] and r.completion_ids[-1] == r.completion_ids[-2]
    assert repeats > 0  # the random model repeats itself somewhere, so the cut was exercised


# ----------------------------------------------------------------------------- seeds
def test_seeded_call_neither_resets_nor_advances_the_training_stream(engine, moe32):
    requests = _requests(_tok(moe32))
    sampling = SamplingParams(max_new_tokens=12)
    seeded = SamplingParams(max_new_tokens=12, seed=7)

    def get_state(_eng):
        return torch.get_rng_state()

    def set_state(_eng, state):
        torch.set_rng_state(state)

    start = _on_engine(engine, get_state)
    first = [r.completion_ids for r in engine.generate(requests, sampling)]
    second = [r.completion_ids for r in engine.generate(requests, sampling)]
    assert first != second  # unseeded calls go on drawing from one stream

    _on_engine(engine, set_state, start)
    evaluation = [r.completion_ids for r in engine.generate(requests, seeded)]
    assert [r.completion_ids for r in engine.generate(requests, seeded)] == evaluation  # a seed repeats its draws
    # after two evaluations the stream continues exactly where it was: not reset, not advanced
    assert [r.completion_ids for r in engine.generate(requests, sampling)] == first
    assert [r.completion_ids for r in engine.generate(requests, sampling)] == second


def test_seeded_call_larger_than_one_scheduler_step(engine, moe32):
    """vLLM schedules at most 4096 prompt tokens a step and splits the rest (chunked prefill); a
    seeded call that large must work (per-request seeds crash there on CPU) and repeat its draws."""
    tok = _tok(moe32)
    prompt = tok(" ".join(["What is 12 plus 7 so the answer is ?"] * 12))["input_ids"][:100]
    requests = [GenerationRequest(prompt, n=1) for _ in range(48)]  # 4800 prompt tokens
    seeded = SamplingParams(max_new_tokens=4, seed=11)
    first = [r.completion_ids for r in engine.generate(requests, seeded)]
    assert [r.completion_ids for r in engine.generate(requests, seeded)] == first
    assert len(set(map(tuple, first))) > 1


# ----------------------------------------------------------------------------- weight sync
@pytest.fixture(scope="module")
def shipped(ray_local):
    return RolloutGroup(1, "vllm", {"model_path": SHIPPED, "seed": 0})


def test_engine_logprobs_equal_the_learners_before_and_after_a_grpo_step_and_sync(shipped):
    """fp32, T = 0.7. If this fails after a vLLM upgrade, the in-place sync on CPU broke (see
    rlkit/rollout/vllm_sync.py `_refresh_cpu_kernels`, checked on vLLM CHECKED_VLLM_VERSION)."""
    import vllm

    tok = _tok(SHIPPED)
    learners = LearnerGroup(1, {"model_path": SHIPPED, "cfg": LearnerConfig(lr=1e-2, micro_batch_size=8),
                                "algo": AlgoConfig(), "temperature": 0.7, "max_new_tokens": 24})
    requests = [GenerationRequest(tok("What is 27 plus 15 ?")["input_ids"], n=4),
                GenerationRequest(tok("What is 3 plus 9 ?")["input_ids"], n=4)]
    sampling = SamplingParams(max_new_tokens=24, temperature=0.7, seed=0)
    upgrade = (f"vLLM {vllm.__version__} (sync checked on {CHECKED_VLLM_VERSION}): "
               "in-place weight sync no longer matches the learner")

    before = shipped.generate(requests, sampling)
    batch = pack_rollouts(before, tok.pad_token_id)
    mask = batch.loss_mask.bool()
    gap = (learners.logprobs(batch)[mask] - batch.old_logp[mask]).abs().max()
    assert gap < 2e-3, f"before any step: {gap}"

    for i, r in enumerate(before):
        r.advantage = [1.0, -1.0, 0.5, -0.5][i % 4]
    for version in (1, 2):  # a second sync too: state left by the first must not leak into the second
        metrics = learners.train_step(pack_rollouts(before, tok.pad_token_id))
        assert metrics["grad_norm"] > 0
        moved = (learners.logprobs(batch)[mask] - batch.old_logp[mask]).abs().max()
        assert moved > 1e-2  # the step changed the policy: the sync below has something to carry
        sync_weights(learners, shipped, version=version)
        after = shipped.generate(requests, SamplingParams(max_new_tokens=24, temperature=0.7, seed=version))
        assert all(r.versions == [version] * r.length for r in after)
        fresh = pack_rollouts(after, tok.pad_token_id)
        fmask = fresh.loss_mask.bool()
        gap = (learners.logprobs(fresh)[fmask] - fresh.old_logp[fmask]).abs().max()
        assert gap < 2e-3, f"{upgrade}: max |engine - learner| = {gap} after sync {version}"


def test_weight_sync_leaves_no_stale_prefix_cache(shipped):
    """vLLM's CPU blocks hold 128 tokens, so the prompt spans one; without the reset its
    keys/values from the old weights would be reused after the sync."""
    from transformers import AutoModelForCausalLM

    tok = _tok(SHIPPED)
    prompt = tok(" ".join(["What is 12 plus 7 ?"] * 30))["input_ids"][:140]
    assert len(prompt) == 140
    model = AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    new_state = {k: v.clone() for k, v in model.state_dict().items()}
    request = [GenerationRequest(prompt, n=2)]
    sampling = SamplingParams(max_new_tokens=8, seed=3)

    def cached_tokens(eng, ids):
        out = eng.llm.generate([{"prompt_token_ids": ids}], eng._params(SamplingParams(), 1, 0), use_tqdm=False)
        return out[0].num_cached_tokens

    shipped.generate(request, sampling)  # the prompt's block is in the prefix cache now
    assert _on_engine(shipped, cached_tokens, prompt) >= 128
    # control: the same reload without the reset serves the old weights' keys/values for the prompt
    def reload_without_reset(eng, state):
        from rlkit.rollout.vllm_sync import reload_in_place

        reload_in_place(eng.llm, eng._checkpoint_format, state, cpu=True)

    _on_engine(shipped, reload_without_reset, new_state)
    stale = shipped.generate(request, sampling)
    assert _max_gap(model, stale, 1.0, 1.0) > 1e-2
    shipped.load_weights(ray.put(new_state), 5)
    fresh = shipped.generate(request, sampling)
    assert _max_gap(model, fresh, 1.0, 1.0) < 2e-3
    assert all(r.versions == [5] * r.length for r in fresh)


# ----------------------------------------------------------------------------- failures
def test_engine_error_reaches_the_caller_with_its_traceback_and_the_engine_goes_on(engine, moe32):
    requests = _requests(_tok(moe32))

    def break_model(eng):
        def fail(*args, **kwargs):
            raise RuntimeError("injected failure in the model forward")

        eng.llm.apply_model(lambda model: setattr(model, "forward", fail))

    def mend_model(eng):
        eng.llm.apply_model(lambda model: model.__dict__.pop("forward", None))

    _on_engine(engine, break_model)
    try:
        with pytest.raises(ray.exceptions.RayTaskError) as failure:
            engine.generate(requests, SamplingParams(max_new_tokens=8))
    finally:
        _on_engine(engine, mend_model)
    text = str(failure.value)
    # the actor's traceback, down through the engine into vLLM
    assert "injected failure in the model forward" in text
    assert 'rlkit/rollout/vllm.py", line' in text and 'vllm/v1/engine' in text
    # the failed call's requests were aborted: the next call gets exactly its own samples
    rollouts = engine.generate(requests, SamplingParams(max_new_tokens=8, seed=4))
    assert [r.meta["id"] for r in rollouts] == ["a", "a", "a", "b", "b"]


def test_dense_model_sync_then_a_killed_engine_is_an_error_not_a_hang(ray_local, moe32, tmp_path_factory):
    """A Qwen2-style dense model (tied head) through the same sync; then its engine process dies
    mid-call. Last in the module: it kills its engine."""
    from transformers import AutoModelForCausalLM

    dense = _build_dense(tmp_path_factory.mktemp("dense"), moe32)
    group = RolloutGroup(1, "vllm", {"model_path": dense, "seed": 0})
    model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.tie_word_embeddings
    requests = _requests(_tok(dense))
    sampling = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.8, seed=0)
    assert _max_gap(model, group.generate(requests, sampling), 0.7, 0.8) < 2e-4
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    group.load_weights(ray.put({k: v.clone() for k, v in model.state_dict().items()}), 1)
    assert _max_gap(model, group.generate(requests, sampling), 0.7, 0.8) < 2e-4

    def die(eng):
        import os

        eng.llm.apply_model(lambda m: setattr(m, "forward", lambda *a, **k: os._exit(3)))

    _on_engine(group, die)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(group.actors[0].generate.remote(requests, sampling), timeout=120)
