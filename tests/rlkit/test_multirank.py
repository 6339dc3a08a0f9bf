"""Two learner ranks under a real local Ray take the one-rank update, also when one rank's tokens
leave some MoE experts without a gradient; and an evaluation leaves the actors' training streams apart.

transformers 5 holds the experts of its own MoE classes fused in one tensor per layer, so an idle
expert still gets a (zero) gradient slice there. Models that bring their own modeling code
(`trust_remote_code`, as DeepSeek's and Kimi's repositories do) often keep one module per
expert: an idle expert's parameters then get no gradient at all. `PER_EXPERT_MODELING` is such
a model (Qwen3-MoE with its experts as a ModuleList), loaded the way those are.
"""

from __future__ import annotations

import pytest
import ray
import torch

from rlkit.actors import LearnerGroup, RolloutGroup, init_ray
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.types import GenerationRequest, SamplingParams, TrainBatch

from ..conftest import WORDS, build_random_tiny_model

EXPERTS = 8

PER_EXPERT_MODELING = """
import torch
from torch import nn
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeMLP, load_balancing_loss_func  # noqa: F401


class PerExpertMoeConfig(Qwen3MoeConfig):
    model_type = "per_expert_moe"


class ExpertList(nn.ModuleList):
    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self):
            token, slot = torch.where(top_k_index == e)
            if token.numel():
                out.index_add_(0, token, expert(hidden_states[token]) * top_k_weights[token, slot, None])
        return out


class PerExpertMoeForCausalLM(Qwen3MoeForCausalLM):
    config_class = PerExpertMoeConfig

    def __init__(self, config):
        super().__init__(config)
        for layer in self.model.layers:
            layer.mlp.experts = ExpertList(Qwen3MoeMLP(config, intermediate_size=config.moe_intermediate_size)
                                           for _ in range(config.num_experts))
        self.post_init()
"""


@pytest.fixture(scope="module")
def ray_local():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def moe8(tmp_path_factory):
    """A random tiny MoE with 8 experts, top-2 (two distinct tokens reach at most 4 of them per layer),
    one module per expert, shipped as remote code."""
    import json
    import sys

    from transformers import AutoTokenizer, Qwen3MoeForCausalLM

    path = tmp_path_factory.mktemp("moe8")
    build_random_tiny_model(path, num_experts=EXPERTS)
    (path / "per_expert_moe.py").write_text(PER_EXPERT_MODELING)
    sys.path.insert(0, str(path))
    try:
        import per_expert_moe
    finally:
        sys.path.remove(str(path))
    fused = Qwen3MoeForCausalLM.from_pretrained(path)
    config = per_expert_moe.PerExpertMoeConfig(**{k: v for k, v in fused.config.to_dict().items()
                                                  if k not in ("model_type", "architectures", "auto_map")})
    torch.manual_seed(0)
    model = per_expert_moe.PerExpertMoeForCausalLM(config)
    model.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "per_expert_moe.PerExpertMoeConfig",
                       "AutoModelForCausalLM": "per_expert_moe.PerExpertMoeForCausalLM"}
    (path / "config.json").write_text(json.dumps(cfg))
    AutoTokenizer.from_pretrained(path).save_pretrained(path)
    return str(path)


def _batch() -> TrainBatch:
    """Rows 0-3 (rank 0 of 2): varied prompts and completions. Rows 4-7 (rank 1): the same two tokens."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, len(WORDS), (10,), generator=g).tolist() for _ in range(4)] + [[5, 9]] * 4
    width = max(map(len, rows))
    ids = torch.zeros((8, width), dtype=torch.long)  # [N, L]
    attn = torch.zeros((8, width), dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros((8, width - 1))  # [N, L-1]
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
        loss_mask[i, 0 : len(r) - 1] = 1.0
    old_logp = -2.0 * loss_mask  # off-policy, so the ratios differ from 1 and clipping can bind
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0, 0.5, -0.5])  # [N]
    return TrainBatch(ids, attn, loss_mask, old_logp, advantages)


def _experts_reached(model_path: str, batch: TrainBatch) -> list[set[int]]:
    from rlkit.models import load_model

    model = load_model(model_path, trust_remote_code=True)
    assert type(model).__name__ == "PerExpertMoeForCausalLM"
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_router_logits=True)
    valid = batch.attention_mask.reshape(-1).bool()
    return [set(layer[valid].topk(2, dim=-1).indices.reshape(-1).tolist()) for layer in out.router_logits]


def _learners(n: int, model_path: str, aux: float, strategy: str = "ddp") -> LearnerGroup:
    kwargs = {"model_path": model_path, "cfg": LearnerConfig(lr=1e-3, micro_batch_size=2, strategy=strategy),
              "algo": AlgoConfig(router_aux_coef=aux), "max_new_tokens": 16, "trust_remote_code": True}
    return LearnerGroup(n, kwargs, num_cpus=0.5)


def _states(group: LearnerGroup) -> list[dict[str, torch.Tensor]]:
    """Each rank's own view of the whole weights."""
    return ray.get([a.state_dict.remote(True) for a in group.actors])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_take_the_one_rank_update_when_a_rank_leaves_experts_idle(ray_local, moe8, strategy):
    batch = _batch()
    rank1 = batch.select(slice(4, 8))
    idle = [set(range(EXPERTS)) - reached for reached in _experts_reached(moe8, rank1)]
    assert all(idle), idle  # rank 1's tokens reach only some experts in every layer

    # the MoE balance loss is per rank and micro-batch (as the model defines it), so it is off for equality
    results = {}
    for n in (1, 2):
        group = _learners(n, moe8, aux=0.0, strategy=strategy if n == 2 else "ddp")
        steps = [group.train_step(batch) for _ in range(2)]  # a second step: DDP/FSDP state carries over
        results[n] = ([m["grad_norm"] for m in steps], _states(group),
                      ray.get([a.parameters_held.remote() for a in group.actors]))
        for actor in group.actors:
            ray.kill(actor)
    (norms1, (state1,), _), (norms2, (rank0, rank1_state), _) = results[1], results[2]
    assert norms2 == pytest.approx(norms1, rel=1e-4)
    for k in state1:
        torch.testing.assert_close(rank0[k], rank1_state[k], atol=0, rtol=0, msg=k)  # the ranks agree exactly
        torch.testing.assert_close(rank0[k], state1[k], atol=1e-5, rtol=1e-4, msg=k)  # and equal one rank
    whole, held = results[1][2][0], results[2][2]  # parameters one rank holds alone / each of two ranks holds
    if strategy == "fsdp":  # it did shard: each rank holds about half of the weights (and of the optimizer state)
        assert all(0.4 * whole < h < 0.6 * whole for h in held), (held, whole)
    else:
        assert held == [whole, whole]


def test_two_moe_ranks_with_the_balance_loss_stay_in_step(ray_local, moe8):
    group = _learners(2, moe8, aux=0.01)
    for _ in range(2):
        metrics = group.train_step(_batch())
        assert metrics["moe/aux_loss"] > 0
    rank0, rank1 = _states(group)
    for k in rank0:
        torch.testing.assert_close(rank0[k], rank1[k], atol=0, rtol=0, msg=k)
    for actor in group.actors:
        ray.kill(actor)


def test_an_evaluation_does_not_align_the_actors_training_streams(ray_local, random_tiny_model):
    from transformers import AutoTokenizer

    group = RolloutGroup(2, "hf", {"model_path": random_tiny_model, "seed": 0}, num_cpus=0.5)
    prompt = AutoTokenizer.from_pretrained(random_tiny_model)("What is 1 plus 2 ?")["input_ids"]
    request = [GenerationRequest(prompt, n=4)]
    train = SamplingParams(max_new_tokens=12, temperature=1.0)
    # an evaluation: seeded, spread over both actors
    group.generate([GenerationRequest(prompt, n=2) for _ in range(4)], SamplingParams(max_new_tokens=12, seed=0))
    after = ray.get([a.generate.remote(request, train) for a in group.actors])
    texts = [[r.completion_ids for r in rollouts] for rollouts in after]
    assert texts[0] != texts[1]  # each actor still draws from its own stream
    # and the evaluation itself is repeatable: the same seed gives the same samples
    evals = [group.generate(request, SamplingParams(max_new_tokens=12, seed=5)) for _ in range(2)]
    assert [r.completion_ids for r in evals[0]] == [r.completion_ids for r in evals[1]]
    for actor in group.actors:
        ray.kill(actor)


@ray.remote
class _DyingLearner:
    """Hands out a weights reference it dies before producing, as a learner killed during a sync does."""

    def state_dict(self):
        import time

        time.sleep(30)
        return {}


def test_weights_lost_with_their_learner_end_the_sync_as_a_learner_death_not_a_rollout_one(ray_local,
                                                                                           random_tiny_model):
    from rlkit.actors import LearnerDied
    from rlkit.weight_sync import sync_weights

    group = RolloutGroup(1, "hf", {"model_path": random_tiny_model, "seed": 0}, num_cpus=0.5)
    engines = list(group.actors)
    learner = _DyingLearner.remote()

    class OneRank:  # the part of LearnerGroup a sync uses
        def state_dict_ref(self):
            ref = learner.state_dict.remote()
            ray.kill(learner)  # the rank dies before the weights exist
            return ref

    with pytest.raises(LearnerDied, match="a learner rank died before its weights reached the engines"):
        sync_weights(OneRank(), group, version=1)
    assert group.actors == engines  # the live engine was not "replaced"
    assert len(group.generate([GenerationRequest([3, 4], n=2)], SamplingParams(max_new_tokens=2))) == 2  # and works
    for actor in group.actors:
        ray.kill(actor)
