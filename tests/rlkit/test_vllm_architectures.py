"""The vLLM engine on a dense Llama and on a DeepSeek-V3 (latent attention, shared expert, sigmoid routing with
a bias), against the learner, before and after a GRPO step and an in-place weight sync.

vLLM's CPU latent-attention kernel exists for DeepSeek-V3's own cache width only (kv_lora_rank 512 +
qk_rope_head_dim 64), so the DeepSeek-V3 here has those two sizes and is tiny elsewhere; a tiny latent width
is refused before Ray starts, as is a DeepSeek-V3 config that does not tell vLLM how the model routes.
"""

from __future__ import annotations

import json

import pytest
import ray

from rlkit.actors import RolloutGroup, init_ray
from rlkit.config import AlgoConfig, LearnerConfig, ModelConfig, RolloutConfig
from rlkit.learner import Learner
from rlkit.models import save_random_tiny_model
from rlkit.rollout.engine import engine_setup
from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts

from ..conftest import WORDS

pytestmark = pytest.mark.requires("vllm")


def _deepseek_v3(**changes):
    from transformers import DeepseekV3Config

    shape = dict(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1,
                 n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
                 kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=32, qk_rope_head_dim=64, v_head_dim=32,
                 max_position_embeddings=128, tie_word_embeddings=False, topk_method="noaux_tc",
                 scoring_func="sigmoid")
    shape.update(changes)
    return DeepseekV3Config(**shape)


def _llama():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)


# measured on this CPU, fp32: all within ~1e-5. With vLLM's own CPU rotary op, which rlkit turns off for
# latent-attention models (`vllm_settings.compilation_config`), the DeepSeek-V3 was ~6e-3 away and the one
# with sharp attention (weights 10x the usual init, so positions matter) over 2 nats away.
CASES = {"llama": (_llama, 2e-3), "deepseek_v3": (_deepseek_v3, 2e-3),
         "deepseek_v3_sharp": (lambda: _deepseek_v3(initializer_range=0.2), 2e-3)}


@pytest.fixture(scope="module")
def ray_local():
    init_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.mark.parametrize("arch", list(CASES))
def test_vllm_logprobs_equal_the_learner_s_before_and_after_a_step_and_sync(ray_local, arch, tmp_path):
    build, tolerance = CASES[arch]
    path = save_random_tiny_model(tmp_path / arch, WORDS, config=build())
    setup = engine_setup(RolloutConfig(engine="vllm"), ModelConfig(path=path), seed=0)
    engine = RolloutGroup(1, setup.name, setup.kwargs)
    learner = Learner(path, LearnerConfig(lr=1e-2, micro_batch_size=4), AlgoConfig(), temperature=0.8)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    requests = [GenerationRequest(tok("What is 1 plus 2 ? the answer is")["input_ids"], n=4)]
    try:
        rollouts = engine.generate(requests, SamplingParams(max_new_tokens=12, temperature=0.8, seed=0))
        batch = pack_rollouts(rollouts, tok.pad_token_id)
        mask = batch.loss_mask.bool()
        gap = float((learner.logprobs(batch)[mask] - batch.old_logp[mask]).abs().max())
        assert gap < tolerance, f"{arch} before any step: {gap}"
        for r, a in zip(rollouts, (1.0, -1.0, 0.5, -0.5)):
            r.advantage = a
        learner.train_step(pack_rollouts(rollouts, tok.pad_token_id), total_tokens=float(mask.sum()),
                           total_seqs=len(batch))
        moved = float((learner.logprobs(batch)[mask] - batch.old_logp[mask]).abs().max())
        assert moved > 10 * tolerance  # the step moved the policy well beyond the tolerance
        engine.load_weights(ray.put(learner.state_dict()), 1)
        fresh = pack_rollouts(engine.generate(requests, SamplingParams(max_new_tokens=12, temperature=0.8, seed=1)),
                              tok.pad_token_id)
        fmask = fresh.loss_mask.bool()
        gap = float((learner.logprobs(fresh)[fmask] - fresh.old_logp[fmask]).abs().max())
        assert gap < tolerance, f"{arch} after a step and a sync: {gap}"
    finally:
        for actor in engine.actors:
            ray.kill(actor)


def test_deepseek_v3_configs_vllm_would_read_differently_are_refused_before_ray(tmp_path):
    unnamed = save_random_tiny_model(tmp_path / "unnamed", WORDS, config=_deepseek_v3())
    config = json.loads((tmp_path / "unnamed" / "config.json").read_text())
    del config["topk_method"], config["scoring_func"]
    (tmp_path / "unnamed" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="topk_method: noaux_tc and scoring_func: sigmoid"):
        engine_setup(RolloutConfig(engine="vllm"), ModelConfig(path=unnamed), seed=0)
    narrow = save_random_tiny_model(tmp_path / "narrow", WORDS, config=_deepseek_v3(kv_lora_rank=32,
                                                                                   qk_rope_head_dim=16))
    with pytest.raises(ValueError, match="serves kv_lora_rank \\+ qk_rope_head_dim = 576 .* this model has 48"):
        engine_setup(RolloutConfig(engine="vllm"), ModelConfig(path=narrow), seed=0)
