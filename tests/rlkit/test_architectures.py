"""Architectures beyond the tiny Qwen3-MoE through the hf engine and the learner.

DeepSeek-V3 (multi-head latent attention: its cache holds a latent and a RoPE key of different
widths; sigmoid routing with a bias, a shared expert, a dense first layer), a dense Llama, and
cache layouts other than plain full attention (Mistral's sliding window, Gemma 3's mix of
sliding and full layers, Qwen3-Next's linear-attention states). For each: the engine's sampling
log-probs equal the learner's before and after a GRPO step and a weight sync, and budget-stopped
samples resume into the uncut greedy answer.
"""

from __future__ import annotations

import pytest
import torch

from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.learner import Learner
from rlkit.models import save_random_tiny_model
from rlkit.rollout.hf import HFEngine
from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts

from ..conftest import WORDS

V = len(WORDS)


def deepseek_v3_config():
    from transformers import DeepseekV3Config

    return DeepseekV3Config(vocab_size=V, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                            n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                            first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=16,
                            qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=128,
                            tie_word_embeddings=False, initializer_range=0.5)


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       initializer_range=0.5)


def mistral_sliding_config():
    from transformers import MistralConfig

    return MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, sliding_window=6, max_position_embeddings=128,
                         initializer_range=0.5)


def gemma3_config():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
                            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                            max_position_embeddings=128, initializer_range=0.5)


def qwen3_next_config():
    from transformers import Qwen3NextConfig

    return Qwen3NextConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_num_value_heads=4,
                           linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4,
                           num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                           layer_types=["linear_attention", "full_attention"], max_position_embeddings=128,
                           initializer_range=0.5)


ARCHITECTURES = {"deepseek_v3": deepseek_v3_config, "llama": llama_config, "mistral_sliding": mistral_sliding_config,
                 "gemma3_mixed": gemma3_config, "qwen3_next_linear": qwen3_next_config}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    save_random_tiny_model(path, WORDS, config=ARCHITECTURES[request.param]())
    return request.param, str(path)


def _requests(tok) -> list[GenerationRequest]:
    # two prompt lengths (left padding) and longer than the sliding windows
    return [GenerationRequest(tok("What is 1 plus 2 ? the answer is")["input_ids"], n=3),
            GenerationRequest(tok("What is 12 plus 7 so the answer is ?")["input_ids"], n=2)]


def test_engine_logprobs_equal_the_learner_s_before_and_after_a_step_and_sync(arch):
    name, path = arch
    engine = HFEngine(path, seed=0)
    assert engine.slab == (name in ("deepseek_v3", "llama"))  # the other layouts run on the model's own cache
    learner = Learner(path, LearnerConfig(lr=1e-2, micro_batch_size=4), AlgoConfig(), temperature=0.8)
    sampling = SamplingParams(max_new_tokens=14, temperature=0.8)
    rollouts = engine.generate(_requests(engine.tokenizer), sampling)
    batch = pack_rollouts(rollouts, engine.pad_id)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(learner.logprobs(batch)[mask], batch.old_logp[mask], atol=2e-4, rtol=0)

    for r, a in zip(rollouts, (1.0, -1.0, 0.5, -0.5, 1.0)):
        r.advantage = a
    metrics = learner.train_step(pack_rollouts(rollouts, engine.pad_id), total_tokens=float(mask.sum()),
                                 total_seqs=len(rollouts))
    assert metrics["grad_norm"] > 0
    engine.load_weights(learner.state_dict(), version=1)
    fresh = engine.generate(_requests(engine.tokenizer), sampling)
    assert all(r.versions == [1] * r.length for r in fresh)
    batch = pack_rollouts(fresh, engine.pad_id)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(learner.logprobs(batch)[mask], batch.old_logp[mask], atol=2e-4, rtol=0)


def test_budget_stopped_greedy_samples_resume_into_the_uncut_answer(arch):
    _, path = arch
    engine = HFEngine(path, seed=0)
    requests = _requests(engine.tokenizer)
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    uncut = engine.generate(requests, greedy)
    # 5 + 5 + 2 tokens over three calls, each resuming from prompt + what came before
    pieces = engine.generate(requests, SamplingParams(max_new_tokens=12, temperature=0.0, token_budget=5))
    for _ in range(2):
        cut = [i for i, r in enumerate(pieces) if r.finish_reason == "budget"]
        resumed = [GenerationRequest(pieces[i].prompt_ids, n=1, prefix_ids=pieces[i].completion_ids,
                                     prefix_logprobs=pieces[i].logprobs, prefix_versions=pieces[i].versions)
                   for i in cut]
        for i, r in zip(cut, engine.generate(resumed, SamplingParams(max_new_tokens=12, temperature=0.0,
                                                                      token_budget=5))):
            pieces[i] = r
    assert [r.completion_ids for r in pieces] == [r.completion_ids for r in uncut]
    for cut, whole in zip(pieces, uncut):
        torch.testing.assert_close(torch.tensor(cut.logprobs), torch.tensor(whole.logprobs), atol=1e-4, rtol=0)
