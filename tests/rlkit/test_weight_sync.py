"""After a learner step and a weight sync, the rollout engine and the learner hold the same policy."""

from __future__ import annotations

import pytest
import ray
import torch

from rlkit.actors import LearnerGroup, RolloutGroup, init_ray
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts
from rlkit.weight_sync import sync_weights


@pytest.fixture(scope="module")
def groups(random_tiny_model):
    init_ray(num_cpus=2)
    rollouts = RolloutGroup(1, "hf", {"model_path": random_tiny_model, "seed": 0})
    learners = LearnerGroup(1, {"model_path": random_tiny_model, "cfg": LearnerConfig(lr=1e-2, micro_batch_size=4),
                                "algo": AlgoConfig(), "max_new_tokens": 12})
    yield rollouts, learners
    ray.shutdown()


def test_engine_matches_learner_after_sync(groups, random_tiny_model):
    from transformers import AutoTokenizer

    rollouts, learners = groups
    tok = AutoTokenizer.from_pretrained(random_tiny_model)
    requests = [GenerationRequest(tok("What is 2 plus 3 ?")["input_ids"], n=4)]
    sampling = SamplingParams(max_new_tokens=12, temperature=1.0, seed=0)
    batch_rollouts = rollouts.generate(requests, sampling)
    for i, r in enumerate(batch_rollouts):
        r.advantage = [1.0, -1.0, 0.5, -0.5][i]  # non-zero advantages: the step must move the weights
    before = rollouts.state_dict()
    metrics = learners.train_step(pack_rollouts(batch_rollouts, tok.pad_token_id))
    assert metrics["grad_norm"] > 0

    learner_state = ray.get(learners.state_dict_ref())
    moved = sum(not torch.equal(before[k], learner_state[k]) for k in before)
    assert moved > 0  # the update changed the learner, so the sync below has something to carry

    sync_weights(learners, rollouts, version=1)
    engine_state = rollouts.state_dict()
    assert engine_state.keys() == learner_state.keys()
    for k in learner_state:
        assert torch.equal(engine_state[k], learner_state[k]), k

    # and behaviourally: the engine's sampling log-probs equal the learner's log-probs of those tokens
    fresh = rollouts.generate(requests, SamplingParams(max_new_tokens=12, temperature=1.0, seed=3))
    assert all(r.versions == [1] * r.length for r in fresh)
    batch = pack_rollouts(fresh, tok.pad_token_id)
    learner_logp = learners.logprobs(batch)  # [N, L-1]
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(learner_logp[mask], batch.old_logp[mask], atol=1e-4, rtol=0)
