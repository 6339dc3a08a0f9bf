"""rlkit.moe: routing replay, route recording, balance losses and aux-loss-free bias balancing.

Two router kinds: the random tiny Qwen3-MoE of conftest (softmax over 4 experts, top-2) and a
tiny DeepSeek-V3 (sigmoid scores plus a routing bias, 8 experts in 2 groups, top-2, a shared
expert and a dense first layer).
"""

from __future__ import annotations

import math

import pytest
import torch

from rlkit import moe
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.learner import Learner
from rlkit.models import load_model, save_random_tiny_model
from rlkit.rollout.hf import HFEngine
from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts

from ..conftest import WORDS
from .test_architectures import deepseek_v3_config


@pytest.fixture(scope="module")
def dsv3(tmp_path_factory):
    return save_random_tiny_model(tmp_path_factory.mktemp("dsv3"), WORDS, config=deepseek_v3_config())


@pytest.fixture(scope="module", params=["qwen3_moe", "deepseek_v3"])
def moe_model(request, random_tiny_model, dsv3):
    return request.param, (random_tiny_model if request.param == "qwen3_moe" else dsv3)


def _ids(seed: int = 0, n: int = 3, length: int = 9) -> torch.Tensor:
    return torch.randint(3, len(WORDS), (n, length), generator=torch.Generator().manual_seed(seed))  # [N, L]


def test_replaying_the_router_s_own_choice_changes_nothing(moe_model):
    _, path = moe_model
    model = load_model(path)
    ids = _ids()
    with moe.capture(model) as free:
        reference = model(input_ids=ids).logits
    own = torch.stack([free.layer(i)[1] for i in range(len(free))], dim=1)  # [N*L, layers, K]
    moe.set_replay(model, own)
    try:
        with moe.capture(model) as replayed:
            again = model(input_ids=ids).logits
    finally:
        moe.set_replay(model, None)
    torch.testing.assert_close(again, reference, atol=1e-6, rtol=0)  # gate weights recomputed as the router does
    assert torch.equal(torch.stack([replayed.layer(i)[1] for i in range(len(replayed))], dim=1), own)
    assert moe.replay_mismatch(model) == 0.0


def test_replay_routes_every_token_to_exactly_the_recorded_experts_with_gradients_to_the_router(moe_model):
    name, path = moe_model
    model = load_model(path)
    ids = _ids(seed=1)
    layers = len(moe.routers(model))
    experts = model.config.n_routed_experts if name == "deepseek_v3" else model.config.num_experts
    g = torch.Generator().manual_seed(2)
    # two distinct experts per token and layer, drawn at random: surely not what the router would pick everywhere
    routes = torch.stack([torch.randperm(experts, generator=g)[:2] for _ in range(ids.numel() * layers)])
    routes = routes.view(ids.numel(), layers, 2)
    routes[0] = -1  # no record for the first token: the router's own choice there
    moe.set_replay(model, routes)
    try:
        with moe.capture(model) as captured:
            logits = model(input_ids=ids).logits
        logits.sum().backward()
    finally:
        moe.set_replay(model, None)
    for layer in range(layers):
        chosen = captured.layer(layer)[1]  # [N*L, K]
        assert torch.equal(chosen[1:], routes[1:, layer])
    assert 0.5 < moe.replay_mismatch(model) <= 1.0  # most random routes differ from the router's own
    for router in moe.routers(model):
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_gate_weights_by_hand():
    class Softmax(torch.nn.Module):
        norm_topk_prob = True

    class Sigmoid(torch.nn.Module):
        norm_topk_prob, routed_scaling_factor = True, 2.5
        e_score_correction_bias = torch.zeros(3)

    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0)]])  # softmax 1/6, 2/6, 3/6
    experts = torch.tensor([[2, 0]])
    # softmax, renormalised over the chosen two: 3/6 / (4/6) = 0.75 and 1/6 / (4/6) = 0.25
    torch.testing.assert_close(moe.gate_weights(Softmax(), logits, experts), torch.tensor([[0.75, 0.25]]))
    # sigmoid: s = 0.5, 2/3, 3/4; chosen (3/4, 1/2) renormalised (0.6, 0.4), times 2.5 -> (1.5, 1.0)
    torch.testing.assert_close(moe.gate_weights(Sigmoid(), logits, experts), torch.tensor([[1.5, 1.0]]))


def test_sequence_balance_loss_by_hand():
    # one sequence of 2 tokens, 2 experts, top-1. Scores s = sigmoid(logits): token 1 (0.5, 0.5), token 2
    # (sigmoid(2), sigmoid(-2)) = (0.8808, 0.1192). Shares s/sum s: (0.5, 0.5) and (0.8808, 0.1192);
    # P = mean = (0.6904, 0.3096). Both tokens chose expert 0: f = E/(K T) * counts = 2/2 * (2, 0) = (2, 0).
    # loss = 2 * 0.6904 + 0 = 1.3808
    logits = (torch.tensor([[0.0, 0.0], [2.0, -2.0]]),)
    experts = (torch.tensor([[0], [0]]),)
    loss = moe.sequence_balance_loss(logits, experts, torch.ones(1, 2, dtype=torch.long), top_k=1)
    s = 1 / (1 + math.exp(-2))
    assert float(loss) == pytest.approx(2 * (0.5 + s) / 2, abs=1e-6)
    # perfectly balanced: each token a different expert with equal scores -> f = (1, 1), P = (0.5, 0.5): 1.0
    balanced = moe.sequence_balance_loss((torch.zeros(2, 2),), (torch.tensor([[0], [1]]),),
                                         torch.ones(1, 2, dtype=torch.long), top_k=1)
    assert float(balanced) == pytest.approx(1.0)


def test_route_mismatch_counts_recorded_token_layer_pairs_by_expert_set():
    routes = torch.tensor([[[[0, 1]], [[2, 3]], [[-1, -1]]]], dtype=torch.int16)  # [N=1, L=3, layers=1, K=2]
    own = (torch.tensor([[1, 0], [2, 0], [3, 3]]),)  # same set, different set, unrecorded
    assert moe.route_mismatch(own, routes, torch.ones(1, 3, dtype=torch.long)) == 0.5


@pytest.mark.parametrize("kind", ["qwen3_moe", "deepseek_v3", "qwen3_next"])
def test_engine_records_the_routes_a_full_forward_takes(kind, random_tiny_model, dsv3, tmp_path):
    from .test_architectures import qwen3_next_config

    path = {"qwen3_moe": random_tiny_model, "deepseek_v3": dsv3}.get(kind)
    if path is None:  # linear attention: the model's own cache, not the slab
        path = save_random_tiny_model(tmp_path / kind, WORDS, config=qwen3_next_config())
    engine = HFEngine(path, seed=0, record_routes=True)
    tok = engine.tokenizer
    requests = [GenerationRequest(tok("What is 1 plus 2 ? the answer is")["input_ids"], n=2),
                GenerationRequest(tok("What is 7 ?")["input_ids"], n=1)]
    first = engine.generate(requests, SamplingParams(max_new_tokens=10, token_budget=4, seed=0))
    # resumed from kept keys/values (same version): the routes of the kept positions come along
    resumed = engine.generate([GenerationRequest(r.prompt_ids, prefix_ids=r.completion_ids, prefix_logprobs=r.logprobs,
                                                 prefix_versions=r.versions) for r in first],
                              SamplingParams(max_new_tokens=10, seed=1))
    model = load_model(path)
    for r in resumed:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        assert r.routes.shape[0] == ids.shape[1] - 1  # every input position: all but the last token
        with moe.capture(model) as captured:
            model(input_ids=ids)
        full = torch.stack([captured.layer(i)[1] for i in range(len(captured))], dim=1)[:-1]  # [T-1, layers, K]
        assert torch.equal(full.sort(dim=-1).values, r.routes.long().sort(dim=-1).values)


def test_learner_replays_the_engine_s_routes_and_measures_the_mismatch(dsv3):
    engine = HFEngine(dsv3, seed=0, record_routes=True)
    rollouts = engine.generate([GenerationRequest(engine.tokenizer("What is 1 plus 2 ?")["input_ids"], n=4)],
                               SamplingParams(max_new_tokens=10, seed=0))
    for r, a in zip(rollouts, (1.0, -1.0, 0.5, -0.5)):
        r.advantage = a
    batch = pack_rollouts(rollouts, engine.pad_id)
    assert batch.routes.shape[:2] == batch.input_ids.shape
    learner = Learner(dsv3, LearnerConfig(micro_batch_size=4), AlgoConfig(routing_replay=True))
    # the replayed forward routes exactly as recorded
    moe.set_replay(learner.policy, batch.routes.flatten(0, 1))
    out = learner.forward(batch)
    recorded = batch.routes.flatten(0, 1)[:, :, 0] >= 0
    for layer, chosen in enumerate(out.experts):
        rows = recorded[:, layer]
        assert torch.equal(chosen[rows].sort(dim=-1).values,
                           batch.routes.flatten(0, 1)[rows, layer].long().sort(dim=-1).values)
    metrics = learner.train_step(batch, total_tokens=float(batch.loss_mask.sum()), total_seqs=len(batch))
    assert metrics["moe/route_mismatch"] == pytest.approx(0.0)  # same weights: the learner's own choice agrees
    assert metrics["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    # after the update, without replay, the learner routes some tokens elsewhere than the rollout did
    engine.load_weights(learner.state_dict(), 1)
    stale = pack_rollouts(rollouts, engine.pad_id)
    plain = Learner(dsv3, LearnerConfig(lr=0.05), AlgoConfig())
    plain.train_step(stale, total_tokens=float(stale.loss_mask.sum()), total_seqs=len(stale))
    metrics = plain.train_step(stale, total_tokens=float(stale.loss_mask.sum()), total_seqs=len(stale))
    assert 0.0 < metrics["moe/route_mismatch"] < 1.0


def test_bias_balancing_evens_out_a_skewed_router(dsv3):
    # the routing biases start skewed toward experts 0 and 1; the weights hardly move (lr 1e-6), so without
    # balancing the load stays skewed, with it the biases walk back toward balance
    batch = pack_rollouts(HFEngine(dsv3, seed=0).generate(
        [GenerationRequest([5, 6, 7, 8, 9, 10], n=8)], SamplingParams(max_new_tokens=16, seed=0)), 0)
    batch.advantages = torch.linspace(-1, 1, len(batch))
    norms = {"total_tokens": float(batch.loss_mask.sum()), "total_seqs": len(batch)}
    curves = {}
    for speed in (0.0, 0.05):
        learner = Learner(dsv3, LearnerConfig(lr=1e-6, micro_batch_size=8), AlgoConfig(bias_balance_speed=speed))
        for router in moe.routers(learner.policy):
            router.e_score_correction_bias.copy_(torch.tensor([0.6, 0.6, 0, 0, 0, 0, 0, 0]))
        curves[speed] = [learner.train_step(batch, **norms)["moe/load_max"] for _ in range(12)]
    flat, balanced = curves[0.0], curves[0.05]
    assert max(flat) - min(flat) < 0.05 and flat[0] > 2.0  # stays skewed
    assert balanced[-1] < flat[-1] - 1.0 and balanced[-1] < balanced[0]  # falls with balancing on
    assert "moe/layer_0/load_max" in learner.train_step(batch, **norms)  # per-layer loads are logged


def test_moe_options_are_refused_before_any_actor_starts_where_the_model_cannot_honour_them(random_tiny_model, tmp_path):
    from .test_architectures import llama_config

    dense = save_random_tiny_model(tmp_path / "llama", WORDS, config=llama_config())
    with pytest.raises(ValueError, match="routing_replay: .* is a dense model"):
        moe.check_options(dense, AlgoConfig(routing_replay=True))
    with pytest.raises(ValueError, match="routing bias; .* routed by Qwen3MoeTopKRouter"):
        moe.check_options(random_tiny_model, AlgoConfig(bias_balance_speed=0.001))
    moe.check_options(random_tiny_model, AlgoConfig(routing_replay=True))  # an MoE: fine


def test_routing_biases_travel_with_weight_sync_and_checkpoints(dsv3, tmp_path):
    learner = Learner(dsv3, LearnerConfig(lr=1e-6), AlgoConfig(bias_balance_speed=0.1))
    engine = HFEngine(dsv3, seed=0)
    batch = pack_rollouts(engine.generate([GenerationRequest([5, 6, 7, 8], n=4)],
                                          SamplingParams(max_new_tokens=8, seed=0)), 0)
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    learner.train_step(batch, total_tokens=float(batch.loss_mask.sum()), total_seqs=len(batch))
    biases = [r.e_score_correction_bias.clone() for r in moe.routers(learner.policy)]
    assert all(bool(b.abs().sum() > 0) for b in biases)  # the step moved them
    engine.load_weights(learner.state_dict(), 1)
    assert all(torch.equal(r.e_score_correction_bias, b) for r, b in zip(moe.routers(engine.model), biases))
    learner.save(tmp_path / "ckpt")
    restored = Learner(dsv3, LearnerConfig(lr=1e-6), AlgoConfig(bias_balance_speed=0.1))
    restored.load(tmp_path / "ckpt")
    assert all(torch.equal(r.e_score_correction_bias, b) for r, b in zip(moe.routers(restored.policy), biases))


@pytest.mark.requires("vllm")
def test_vllm_on_cpu_refuses_to_record_routes_before_ray_starts():
    from rlkit.config import ModelConfig, RolloutConfig
    from rlkit.rollout.engine import engine_setup

    with pytest.raises(ValueError, match="V2 model runner, which needs Triton"):
        engine_setup(RolloutConfig(engine="vllm"), ModelConfig(), seed=0, record_routes=True)
