"""The learner's forward paths, micro-batching, precision, dropout and metrics, each against a reference.

The reference is the model's own full forward ("full"): every fast path must give the same
log-probs, entropies, MoE balance loss and gradients on the same rows.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.forward import MIN_SHARED_PREFIX, PolicyForward
from rlkit.learner import Learner
from rlkit.metrics import merge_metrics
from rlkit.models import load_model
from rlkit.types import TrainBatch

PAD = 0


def _rows(seed: int = 0, n: int = 6, prefix: int = MIN_SHARED_PREFIX + 2, vocab: int = 25) -> TrainBatch:
    """Right-padded rows that share a `prefix`-token start (a template) and pairs that share a prompt,
    with completions of different lengths; loss on the completion tokens, advantages of both signs."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(3, vocab, (prefix,), generator=g).tolist()
    rows = []
    for i in range(n):
        prompt = start + torch.randint(3, vocab, (3,), generator=torch.Generator().manual_seed(seed + i // 2)).tolist()
        completion = torch.randint(3, vocab, (4 + 3 * i,), generator=g).tolist()
        rows.append((prompt, completion))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((n, width), PAD, dtype=torch.long)  # [N, L]
    attn = torch.zeros((n, width), dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros((n, width - 1))  # [N, L-1]
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        loss_mask[i, len(p) - 1 : len(p) - 1 + len(c)] = 1.0
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0][:n])  # [N]
    return TrainBatch(ids, attn, loss_mask, torch.zeros(n, width - 1), advantages)


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("path", ["tree", "shared_prefix", "plain"])
def test_fast_path_equals_full_forward_in_logprobs_entropy_aux_loss_and_gradients(random_tiny_model, path):
    b = _rows()
    results = {}
    for name in ("full", path):
        model = load_model(random_tiny_model)
        policy = PolicyForward(model, chunk_tokens=7)  # several output chunks, one of them ragged
        out = policy(b.input_ids, b.attention_mask, temperature=0.7, top_p=0.9, entropy=True, router=True,
                     paths=(name,) if name != "full" else ())
        assert out.path == name  # the path applied (it did not fall back)
        # a loss touching every output: weighted log-probs, entropies and the balance loss
        weights = b.loss_mask * b.advantages[:, None]  # [N, L-1]
        loss = (out.logp * weights).sum() + 0.1 * (out.entropy * b.loss_mask).sum() + 0.5 * out.aux_loss
        loss.backward()
        results[name] = (out, _grads(model))
    (ref, ref_grads), (fast, fast_grads) = results["full"], results[path]
    mask = b.loss_mask > 0
    torch.testing.assert_close(fast.logp[mask], ref.logp[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(fast.entropy[mask], ref.entropy[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(fast.aux_loss, ref.aux_loss, atol=1e-6, rtol=1e-5)
    assert ref_grads.keys() == fast_grads.keys()
    for k in ref_grads:
        torch.testing.assert_close(fast_grads[k], ref_grads[k], atol=1e-5, rtol=1e-4, msg=k)
    if path == "tree":
        assert fast.packed_tokens < b.attention_mask.sum()  # the shared prefixes ran once


def test_top_p_logprobs_are_those_of_the_renormalised_nucleus():
    from rlkit.algo.logprobs import nucleus_mask, sampling_logprobs, target_logprobs

    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]])  # probabilities 0.5, 0.3, 0.2
    # top_p 0.8: mass ahead of each token is 0, 0.5, 0.8 -> the third (0.8 is not < 0.8) is out
    assert nucleus_mask(torch.log_softmax(logits, -1), 0.8).tolist() == [[True, True, False]]
    logp = sampling_logprobs(logits, 1.0, 0.8)
    torch.testing.assert_close(logp.exp(), torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0]]))
    # the learner's per-token form: log 0.3 - log 0.8 for the second token
    torch.testing.assert_close(target_logprobs(logits, torch.tensor([1]), 1.0, 0.8),
                               torch.tensor([math.log(0.3 / 0.8)]))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_top_p_logprobs_equal_the_learner_s(random_tiny_model, temperature):
    from rlkit.rollout.hf import HFEngine
    from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts

    engine = HFEngine(random_tiny_model, seed=0)
    tok = engine.tokenizer
    requests = [GenerationRequest(tok("What is 1 plus 2 ?")["input_ids"], n=4)]
    rollouts = engine.generate(requests, SamplingParams(max_new_tokens=16, temperature=temperature, top_p=0.8,
                                                        seed=0))
    batch = pack_rollouts(rollouts, engine.pad_id)
    learner = Learner(random_tiny_model, LearnerConfig(), AlgoConfig(), temperature=temperature, top_p=0.8)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(learner.logprobs(batch)[mask], batch.old_logp[mask], atol=1e-4, rtol=0)
    # the nucleus is doing something: untruncated log-probs of the same tokens are lower
    untruncated = Learner(random_tiny_model, LearnerConfig(), AlgoConfig(), temperature=temperature).logprobs(batch)
    assert bool((untruncated[mask] < batch.old_logp[mask] - 1e-3).any())


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one precision setting per process: start and leave this test with a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_mixed_precision_applies_on_every_path(random_tiny_model, fresh_accelerate_state):
    learner = Learner(random_tiny_model, LearnerConfig(mixed_precision="bf16"), AlgoConfig())
    seen: list[torch.dtype] = []
    policy = learner.policy
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
             for m in (policy.model.layers[0].self_attn.q_proj, policy.get_output_embeddings())]
    b = _rows()
    try:
        for path in ("tree", "shared_prefix", "plain", "full"):
            seen.clear()
            out = learner.model(b.input_ids, b.attention_mask, router=True, paths=(path,) if path != "full" else ())
            assert out.path == path
            assert seen and set(seen) == {torch.bfloat16}, (path, seen)
    finally:
        for h in hooks:
            h.remove()


def test_fast_paths_are_verified_when_the_learner_starts_whatever_the_data(random_tiny_model):
    learner = Learner(random_tiny_model, LearnerConfig(), AlgoConfig())
    assert learner.verified == {"tree": True, "shared_prefix": True, "plain": True}
    b = _rows()
    empty = TrainBatch(b.input_ids, b.attention_mask, torch.zeros_like(b.loss_mask), b.old_logp, b.advantages)
    assert learner.forward(empty).path == "tree"  # rows with no loss tokens change nothing


def test_a_fast_path_that_does_not_match_the_model_is_refused(random_tiny_model, monkeypatch):
    # a head that is not a plain projection of the last hidden state (logits scaled inside the model's own
    # forward, as some architectures do): the chunked head would miss the scaling. The first rows the learner
    # trains on have no loss tokens, which used to let an unchecked path through.
    from transformers import Qwen3MoeForCausalLM

    plain_forward = Qwen3MoeForCausalLM.forward

    def scaled_forward(self, *args, **kwargs):
        out = plain_forward(self, *args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    monkeypatch.setattr(Qwen3MoeForCausalLM, "forward", scaled_forward)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner = Learner(random_tiny_model, LearnerConfig(), AlgoConfig())
    assert learner.verified == {"tree": False, "shared_prefix": False, "plain": False}
    assert any("does not reproduce" in str(w.message) for w in caught)
    b = _rows()
    empty = TrainBatch(b.input_ids, b.attention_mask, torch.zeros_like(b.loss_mask), b.old_logp, b.advantages)
    assert learner.forward(empty).path == "full" and learner.forward(b).path == "full"


def test_micro_batched_step_takes_the_same_gradient_as_one_micro_batch(random_tiny_model):
    # the MoE balance loss is computed per micro-batch (as the model defines it), so it is off here
    b = _rows()
    b.old_logp = b.loss_mask * -1.3  # off-policy: ratios other than 1
    norms = {"total_tokens": float(b.loss_mask.sum()), "total_seqs": len(b)}
    grads = {}
    for micro in (len(b), 2, 1):
        learner = Learner(random_tiny_model, LearnerConfig(micro_batch_size=micro), AlgoConfig(router_aux_coef=0.0))
        captured = {}
        step = learner.optimizer.step
        learner.optimizer.step = lambda *a, **k: (captured.update(_grads(learner.policy)), step(*a, **k))[1]
        learner.train_step(b, **norms)
        grads[micro] = captured
    for micro in (2, 1):
        for k, g in grads[len(b)].items():
            torch.testing.assert_close(grads[micro][k], g, atol=1e-6, rtol=1e-5, msg=f"{micro}: {k}")


@pytest.fixture(scope="module")
def dropout_models(tmp_path_factory, random_tiny_model):
    """The random tiny MoE with attention dropout 0.5, and a GPT-2 with every dropout at 0.5."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(random_tiny_model)
    moe_dir = tmp_path_factory.mktemp("moe_dropout")
    cfg = AutoConfig.from_pretrained(random_tiny_model)
    cfg.attention_dropout = 0.5
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(moe_dir)
    tok.save_pretrained(moe_dir)
    gpt_dir = tmp_path_factory.mktemp("gpt2_dropout")
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5))
    gpt.generation_config.eos_token_id = tok.eos_token_id
    gpt.save_pretrained(gpt_dir)
    tok.save_pretrained(gpt_dir)
    return {"moe": str(moe_dir), "gpt2": str(gpt_dir)}


@pytest.mark.parametrize("kind", ["moe", "gpt2"])
def test_dropout_is_off_so_the_on_policy_ratio_is_one(dropout_models, kind):
    from rlkit.rollout.hf import HFEngine
    from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts

    path = dropout_models[kind]
    engine = HFEngine(path, seed=0)
    rollouts = engine.generate([GenerationRequest(engine.tokenizer("What is 1 plus 2 ?")["input_ids"], n=4)],
                               SamplingParams(max_new_tokens=12, seed=0))
    for r, a in zip(rollouts, (1.0, -1.0, 0.5, -0.5)):
        r.advantage = a
    batch = pack_rollouts(rollouts, engine.pad_id)
    learner = Learner(path, LearnerConfig(), AlgoConfig())
    mask = batch.loss_mask.bool()
    # in training mode, twice, and equal to the engine's (the sampling policy's) log-probs
    torch.testing.assert_close(learner.logprobs(batch)[mask], batch.old_logp[mask], atol=1e-4, rtol=0)
    metrics = learner.train_step(batch, total_tokens=float(mask.sum()), total_seqs=len(batch))
    assert metrics["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["actor/ratio_max"] == pytest.approx(1.0, abs=1e-3)


def test_ratio_max_is_the_maximum_over_micro_batches_and_mismatch_kl_is_k3_from_rollout_samples(random_tiny_model):
    learner = Learner(random_tiny_model, LearnerConfig(micro_batch_size=2, log_entropy=False), AlgoConfig())
    b = _rows()
    mask = b.loss_mask > 0
    with torch.no_grad():
        logp = learner.forward(b).logp  # [N, L-1], the policy before the step
    # behaviour log-probs 0.1 below the policy's everywhere, and 0.5 below on one token of the last row
    old = torch.where(mask, logp - 0.1, torch.zeros_like(logp))
    last_token = mask[-1].nonzero()[0, 0]
    old[-1, last_token] = logp[-1, last_token] - 0.5
    b.old_logp = old
    metrics = learner.train_step(b, total_tokens=float(mask.sum()), total_seqs=len(b))
    # ratio e^0.5 = 1.6487 on that one token, e^0.1 = 1.1052 elsewhere: the max is the max, in whatever micro-batch
    assert metrics["actor/ratio_max"] == pytest.approx(math.exp(0.5), abs=1e-4)
    # k3 with r = p_train / p_rollout: r - 1 - log r; per token e^0.1 - 1.1 = 0.0051709, one token e^0.5 - 1.5
    tokens = float(mask.sum())
    expected = ((tokens - 1) * (math.exp(0.1) - 1.1) + (math.exp(0.5) - 1.5)) / tokens
    assert metrics["mismatch/kl"] == pytest.approx(expected, rel=1e-3)


def test_merge_metrics_weights_means_and_takes_maxima():
    parts = [({"a": 1.0, "x_max": 3.0}, 1.0), ({"a": 4.0, "x_max": 2.0}, 2.0), ({"a": 100.0, "x_max": 50.0}, 0.0)]
    # a: (1*1 + 4*2) / 3 = 3; x_max: max over parts with tokens = 3 (the empty part's 50 is not a maximum of anything)
    assert merge_metrics(parts) == {"a": 3.0, "x_max": 3.0}


@pytest.mark.parametrize("every", [0, 1])
def test_kl_reference_is_the_initial_policy_or_refreshed_every_k_steps(random_tiny_model, every):
    # algo.kl_kind=k2 with kl_coef=tau and ref_refresh_every=k is Kimi k1.5's mirror-descent regulariser
    learner = Learner(random_tiny_model, LearnerConfig(lr=1e-2), AlgoConfig(kl_coef=0.1, kl_kind="k2",
                                                                            ref_refresh_every=every))
    initial = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    b = _rows()
    metrics = learner.train_step(b, total_tokens=float(b.loss_mask.sum()), total_seqs=len(b))
    assert metrics["actor/kl"] == pytest.approx(0.0, abs=1e-12)  # the reference starts as the policy itself
    reference, policy = learner.reference.model.state_dict(), learner.policy.state_dict()
    moved = [k for k in policy if not torch.equal(policy[k], initial[k])]
    assert moved  # the step changed the policy
    expected = policy if every == 1 else initial
    assert all(torch.equal(reference[k], expected[k]) for k in moved)
    metrics = learner.train_step(b, total_tokens=float(b.loss_mask.sum()), total_seqs=len(b))
    assert (metrics["actor/kl"] > 1e-9) == (every == 0)  # a fresh reference starts each step at KL 0


def test_optimizer_state_offloaded_between_steps_takes_the_same_steps(random_tiny_model):
    b = _rows()
    b.old_logp = b.loss_mask * -1.3
    norms = {"total_tokens": float(b.loss_mask.sum()), "total_seqs": len(b)}
    states = []
    for offload in (False, True):
        learner = Learner(random_tiny_model, LearnerConfig(lr=1e-2, offload_optimizer=offload), AlgoConfig())
        for _ in range(2):
            learner.train_step(b, **norms)
        held = {v.device.type for s in learner.optimizer.state.values() for k, v in s.items()
                if isinstance(v, torch.Tensor) and k != "step"}
        assert held == {"cpu"}
        states.append(learner.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], atol=0, rtol=0, msg=k)


def test_half_precision_keeps_the_fast_paths(random_tiny_model):
    # bf16 rounds differently along each path (up to ~0.1 on a token); that alone must not cost the fast paths
    learner = Learner(random_tiny_model, LearnerConfig(), AlgoConfig(), dtype="bfloat16")
    assert learner.verified == {"tree": True, "shared_prefix": True, "plain": True}
